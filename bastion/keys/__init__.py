"""The bastion's keys: what they are, how old, and how they are rotated (``bastion keys``).

* :mod:`bastion.keys.model` (pure): kinds, states, the records of the key registry.
* :mod:`bastion.keys.registry`: the registry file (``<state_dir>/keys/registry.json``).
* :mod:`bastion.keys.host`: the SSH host key files (``listener.host_key`` and its ``.next``).
* :mod:`bastion.keys.recipients`: which auditors' key new recordings are encrypted to.
* :mod:`bastion.keys.lockdown`: the marker that refuses logins during a compromise rotation.
* :mod:`bastion.keys.rotate`: each rotation, audited before it acts.
* :mod:`bastion.keys.inventory`: every key with its state and age (``keys list``,
  ``check-config``).
"""
