"""The operator's console: a Textual app run in its own process per SSH session.

Built by issue 7. It never imports asyncssh, hvac, kubernetes or the bastion's adapters.
"""
