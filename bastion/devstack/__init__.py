"""Local stand-ins for the demo and the tests: kubesim and an OpenBao launcher.

Built by issue 3. Nothing in the product imports this package except the demo command.
"""
