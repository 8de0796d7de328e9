"""Rendering a role's templates on the controller (``ansible-playbook`` on localhost), with the
role's defaults and derived variables and the extra variables a test gives: what the role
would write, without a host to write it to."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from test_toolbox_image import tool_path

ANSIBLE = Path(__file__).resolve().parents[2] / "ansible"


def ansible_env(home: Path) -> dict[str, str]:
    tools = str(tool_path("ansible-playbook").parent)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    return {
        **inherited,
        "PATH": f"{tools}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"),
        "ANSIBLE_HOME": str(home),
        "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }


def render_templates(
    role: Path, names: Sequence[str], dest: Path, extra: Mapping[str, Any]
) -> dict[str, Path]:
    """Render ``role``'s templates ``names`` (without ``.j2``) into ``dest``; their paths."""
    found = (role / "defaults/main.yml", role / "vars/main.yml")
    vars_files = [str(path) for path in found if path.exists()]
    playbook = dest / "render.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Render",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    # Not whatever `python3` is on PATH (a pyenv shim may be broken).
                    "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
                    "vars_files": vars_files,
                    "tasks": [
                        {
                            "name": f"Render {name}",
                            "ansible.builtin.template": {
                                "src": str(role / "templates" / f"{name}.j2"),
                                "dest": str(dest / name),
                                "mode": "0600",
                            },
                        }
                        for name in names
                    ],
                }
            ]
        )
    )
    env = ansible_env(dest / "ansible-home")
    if (role / "filter_plugins").is_dir():
        env["ANSIBLE_FILTER_PLUGINS"] = str(role / "filter_plugins")
    result = subprocess.run(
        [tool_path("ansible-playbook"), "-i", "localhost,", str(playbook),
         "-e", json.dumps(dict(extra))],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return {name: dest / name for name in names}
