"""A hardened SSH jump host for debugging Kubernetes workloads."""

__version__ = "0.1.0"
