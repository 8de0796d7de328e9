"""The SSH front door: two-factor login, channel policy and the console process.

See docs/front-door.md. Importing :mod:`bastion.ssh.front_door` applies the asyncssh
extensions of :mod:`bastion.ssh.asyncssh_ext`.
"""
