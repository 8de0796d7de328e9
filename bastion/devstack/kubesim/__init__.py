"""kubesim: a Kubernetes API server stand-in, faithful enough for real clients.

Serves HTTPS with its own CA; see docs/kubesim.md for what it covers and what it does not.
"""
