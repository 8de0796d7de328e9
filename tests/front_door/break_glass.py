"""Break-glass accounts in a test bastion: some operators marked ``break_glass``, the config's
``break_glass`` section (its alerts to receivers the test runs, under a test CA), and codes
issued the way ``bastion breakglass issue`` stores them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from bastion.breakglass.code_key import load_or_create_code_key
from bastion.breakglass.codes import code_digest, new_batch_id, new_codes
from bastion.config import load_config
from bastion.state.breakglass_codes import SqliteBreakGlassCodes
from front_door.harness import IMAGE, BastionEnv, Operator

REASON = "INC-4242 payments api answers 500, checking the api pods"


def break_glass_section(
    ca_file: Path, *, webhook: str | None = None, syslog: str | None = None, **settings: Any
) -> dict[str, Any]:
    alerts: dict[str, Any] = {}
    if webhook is not None:
        alerts["webhook"] = {"url": webhook, "ca_file": str(ca_file)}
    if syslog is not None:
        alerts["syslog"] = {"address": syslog, "ca_file": str(ca_file)}
    return {
        "grant": {
            "clusters": ["*"],
            "namespaces": ["*"],
            "modes": ["ephemeral"],
            "images": [IMAGE],
            "vault_role": "debug",
        },
        "alerts": alerts,
        **settings,
    }


def make_break_glass(
    env: BastionEnv, accounts: list[str], section: dict[str, Any], **config: Any
) -> list[Operator]:
    """Mark ``accounts`` break-glass and add ``section``; the operators, in that order."""
    data = yaml.safe_load(env.config_path.read_text())
    for user in data["users"]:
        if user["name"] in accounts:
            user["break_glass"] = True
            user["groups"] = ["breakglass"]
    data["break_glass"] = section
    data.update(config)
    env.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    for name in accounts:
        env._unused.remove(name)  # not handed out as ordinary operators
    return [env.operators[name] for name in accounts]


def issue_codes(env: BastionEnv, user: str, count: int = 3) -> list[str]:
    """What ``bastion breakglass issue USER --count N`` stores; the codes."""
    config = load_config(env.config_path)
    key = load_or_create_code_key(config)
    codes = new_codes(count)
    store = SqliteBreakGlassCodes(config.login_db_path())
    try:
        store.issue(user, new_batch_id(), [code_digest(key, user, c) for c in codes],
                    now=time.time())  # fmt: skip
    finally:
        store.close()
    return codes
