"""The ``bastion`` command: server, admin and audit tools, and the local demo."""
