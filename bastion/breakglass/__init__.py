"""Break-glass: a sealed emergency account's way in, loud and time-boxed.

A user marked ``break_glass`` logs in with the SSH key, the TOTP code **and** one of a batch
of one-time codes (``bastion breakglass issue``), gives a reason before anything else, and
gets the config's ``break_glass`` grant for a time box nothing extends. Every use alerts at
once (syslog at ``crit``, a webhook), shows a banner in every operator's console, and is
recorded, input included. ``bastion breakglass report SESSION`` is the incident record.
See docs/break-glass.md.
"""
