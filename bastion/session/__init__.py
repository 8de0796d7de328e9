"""The session broker: sessions' lifecycle, deadlines and wipe, and the reaper that finishes
the wipe of sessions whose process died.

Nothing is imported here, so that importing one module of the package loads only what that
module needs.
"""
