"""Cross-checks of the ``oversight`` section and of the ``moderated`` flags (docs/oversight.md).

A moderated shell starts only while an auditor watches it, so a flag that no auditor could
ever satisfy would refuse every such shell: that is a configuration error, said at start-up.
"""

from __future__ import annotations

from bastion.config.models import Config

__all__ = ["oversight_problems"]

Problem = tuple[tuple[str | int, ...], str]


def oversight_problems(config: Config) -> list[Problem]:
    problems: list[Problem] = []
    section = config.oversight
    known = {u.name for u in config.users}
    groups = {g for u in config.users for g in u.groups}
    moderated: list[tuple[str | int, ...]] = [
        ("grants", i, "approval", "moderated")
        for i, g in enumerate(config.grants)
        if g.approval is not None and g.approval.moderated
    ]
    if config.break_glass is not None and config.break_glass.moderated:
        moderated.append(("break_glass", "moderated"))
    if section is None:
        problems.extend(
            (where, "a moderated shell needs a watcher, but the config has no oversight "
             "section naming the auditors who may watch")
            for where in moderated
        )  # fmt: skip
        return problems
    for j, name in enumerate(section.auditors.users):
        if name not in known:
            problems.append((("oversight", "auditors", "users", j), f"no user named {name!r}"))
    auditors = set(section.auditors.users) & known
    auditors |= {u.name for u in config.users if set(u.groups) & set(section.auditors.groups)}
    if not auditors and (moderated or section.auditors.groups):
        missing = ", ".join(g for g in section.auditors.groups if g not in groups)
        problems.append(
            (
                ("oversight", "auditors"),
                "no configured user is an auditor"
                + (f" (no user is in {missing})" if missing else "")
                + ": name existing users, or groups that have members",
            )
        )
    return problems
