"""What ``bastion check-config`` warns about for break-glass: mistakes that leave the
config valid but the emergency account unusable (or the section unused)."""

from __future__ import annotations

import os
import sqlite3

from bastion.config import Config

__all__ = ["break_glass_warnings"]


def break_glass_warnings(config: Config) -> list[str]:
    section = config.break_glass
    if section is None:
        return []
    accounts = [u for u in config.users if u.break_glass]
    found: list[str] = []
    if not accounts:
        found.append(
            "break_glass is configured but no user is marked break_glass: nobody can use it"
        )
    if config.recording is None:
        found.append(
            "break_glass is configured but there is no recording section: a break-glass "
            "session, which must be recorded, cannot start"
        )
    for user in accounts:
        path = config.totp_secret_path(user)
        if user.totp_secret_file is None and not os.path.lexists(path):
            found.append(
                f"break-glass account {user.name} is not enrolled (no TOTP secret), so it "
                f"cannot log in; run: bastion user enroll {user.name}"
            )
    if not accounts:
        return found
    try:
        store = config.state_stores().break_glass_codes(read_only=True)
    except FileNotFoundError:
        store = None
    except sqlite3.Error as exc:
        return [
            *found,
            f"the break-glass codes in {config.login_db_path()} cannot be read ({exc}); run "
            "check-config as root or the service user to check them",
        ]
    try:
        for user in accounts:
            try:
                state = store.batch(user.name) if store is not None else None
            except sqlite3.Error as exc:
                found.append(f"the break-glass codes of {user.name} cannot be read ({exc})")
                continue
            fix = f"bastion breakglass issue {user.name} --count 5"
            if state is None:
                found.append(
                    f"break-glass account {user.name} has no codes issued, so it cannot log "
                    f"in; run: {fix}"
                )
            elif state.remaining == 0:
                found.append(
                    f"break-glass account {user.name} has used all {state.issued} codes of "
                    f"its batch, so it cannot log in; run: {fix}"
                )
    finally:
        if store is not None:
            store.close()
    return found
