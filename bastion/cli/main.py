"""``bastion`` command-line entry point: parses arguments, runs one command, maps errors.

A foreseeable failure (any :class:`bastion.errors.BastionError`) is printed as one clear
message with what to do next and its exit code; only a bug shows a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from bastion import __version__
from bastion.cli import audit, check_config
from bastion.errors import BastionError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bastion",
        description="A hardened SSH jump host for debugging Kubernetes workloads.",
    )
    parser.add_argument("--version", action="version", version=f"bastion {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("check-config", help="validate a config file and its secret files")
    p.add_argument("path", type=Path, metavar="PATH")
    p.set_defaults(run=lambda a: check_config.run(a.path))

    p = commands.add_parser("audit", help="work with the audit log")
    audit_commands = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    v = audit_commands.add_parser("verify", help="check the hash chain of an audit log")
    v.add_argument("path", type=Path, metavar="PATH")
    v.add_argument("--head", type=Path, help="head file (default: PATH.head)")
    v.add_argument(
        "--no-head",
        action="store_true",
        help="check the chain only (a copy without its head file): tail truncation is not seen",
    )
    v.set_defaults(run=lambda a: audit.verify(a.path, head=a.head, no_head=a.no_head))

    p = commands.add_parser("demo", help="run the bastion on the embedded local stack")
    p.add_argument("--state-dir", type=Path, help="where to keep the demo's files")
    p.set_defaults(run=lambda a: _demo_module().run(a.state_dir))

    p = commands.add_parser("devstack", help="the local stand-ins: kubesim and OpenBao")
    stack_commands = p.add_subparsers(dest="devstack_command", required=True, metavar="ACTION")
    up = stack_commands.add_parser("up", help="start kubesim and OpenBao until Ctrl-C")
    up.add_argument("--state-dir", type=Path, required=True, help="where devstack.json goes")
    up.add_argument("--fixture", type=Path, help="kubesim fixture (default: the demo cluster)")
    up.set_defaults(run=lambda a: _demo_module().devstack_up(a.state_dir, a.fixture))
    return parser


def _demo_module() -> ModuleType:
    # Imported on use: the demo module is the only one allowed to load bastion.devstack,
    # and other commands should not pay for importing it.
    from bastion.cli import demo  # noqa: PLC0415

    return demo


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except BastionError as exc:
        print(f"bastion: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
