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
from typing import Any

from bastion import __version__
from bastion.cli import (
    approvals,
    audit,
    breakglass,
    check_config,
    db,
    keys,
    recordings,
    sessions,
    user,
)
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

    audit.add_commands(commands, _config_option)
    keys.add_commands(commands, _config_option)

    p = commands.add_parser("serve", help="run the SSH front door (one worker per core)")
    _config_option(p)
    p.add_argument("--workers", type=int, help="worker processes (default: listener.workers)")
    p.set_defaults(run=lambda a: _serve(a.config, a.workers))

    _add_user(commands)
    _add_sessions(commands)
    _add_db(commands)
    _add_approvals(commands)
    _add_recordings(commands)
    _add_breakglass(commands)

    p = commands.add_parser("demo", help="run the bastion on the embedded local stack")
    p.add_argument(
        "--state-dir", type=Path, help="where to keep the demo's files (default: .state/demo)"
    )
    p.add_argument("--port", type=int, default=2222, help="SSH port on 127.0.0.1; 0: any free port")
    p.set_defaults(run=lambda a: _demo_module().run(a.state_dir, a.port))

    p = commands.add_parser("devstack", help="the local stand-ins: kubesim and OpenBao")
    stack_commands = p.add_subparsers(dest="devstack_command", required=True, metavar="ACTION")
    up = stack_commands.add_parser("up", help="start kubesim and OpenBao until Ctrl-C")
    up.add_argument("--state-dir", type=Path, required=True, help="where devstack.json goes")
    up.add_argument("--fixture", type=Path, help="kubesim fixture (default: the demo cluster)")
    up.set_defaults(run=lambda a: _demo_module().devstack_up(a.state_dir, a.fixture))
    return parser


def _add_user(commands: Any) -> None:
    p = commands.add_parser("user", help="add operators, enrol their second factor, unlock")
    user_commands = p.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    u = user_commands.add_parser("add", help="add a user to paths.users_dir")
    u.add_argument("name", metavar="NAME")
    u.add_argument(
        "--key",
        type=Path,
        action="append",
        required=True,
        metavar="FILE",
        help="the user's OpenSSH public key file (.pub); repeat for several files",
    )
    u.add_argument(
        "--group", action="append", default=[], metavar="G", help="a group; repeat for several"
    )
    _config_option(u)
    u.set_defaults(run=lambda a: user.add(a.config, a.name, a.key, a.group))
    u = user_commands.add_parser(
        "enroll", help="new TOTP secret and scratch codes, shown once (QR code)"
    )
    u.add_argument("name", metavar="NAME")
    u.add_argument(
        "--issuer",
        default=user.DEFAULT_ISSUER,
        help="the name authenticator apps show (default: %(default)s)",
    )
    _config_option(u)
    u.set_defaults(run=lambda a: user.enroll(a.config, a.name, a.issuer))
    u = user_commands.add_parser("unlock", help="clear a user's failed logins and lock")
    u.add_argument("name", metavar="NAME")
    _config_option(u)
    u.set_defaults(run=lambda a: user.unlock(a.config, a.name))
    u = user_commands.add_parser(
        "allow-source", help="let a user log in from an address the guard has not seen"
    )
    u.add_argument("name", metavar="NAME")
    u.add_argument("address", metavar="ADDRESS", help="an IPv4 or IPv6 address")
    _config_option(u)
    u.set_defaults(run=lambda a: user.allow_source(a.config, a.name, a.address))
    u = user_commands.add_parser("list", help="users, their source and login state")
    _config_option(u)
    u.set_defaults(run=lambda a: user.list_users(a.config))


def _add_sessions(commands: Any) -> None:
    p = commands.add_parser("sessions", help="live sessions: list them, end one")
    session_commands = p.add_subparsers(dest="sessions_command", required=True, metavar="ACTION")
    s = session_commands.add_parser("list", help="live sessions, their state and deadlines")
    _config_option(s)
    s.set_defaults(run=lambda a: sessions.list_sessions(a.config))
    s = session_commands.add_parser("kill", help="end a session and wipe what it created")
    s.add_argument("session_id", metavar="ID")
    _config_option(s)
    s.add_argument("--reason", required=True, help="why: the session's operator is shown it")
    s.set_defaults(run=lambda a: sessions.kill(a.config, a.session_id, a.reason))


def _add_db(commands: Any) -> None:
    p = commands.add_parser("db", help="the state database: migrate its schema")
    db_commands = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    d = db_commands.add_parser("migrate", help="bring the state schema up to date")
    _config_option(d)
    d.set_defaults(run=lambda a: db.migrate(a.config))


def _add_approvals(commands: Any) -> None:
    p = commands.add_parser("approvals", help="four-eyes approval requests: list, approve, deny")
    actions = p.add_subparsers(dest="approvals_command", required=True, metavar="ACTION")
    a = actions.add_parser("list", help="open requests (pending, or approved and unused)")
    a.add_argument("--json", action="store_true", help="one JSON array, every field")
    a.add_argument("--all", action="store_true", help="every request of the last week")
    _config_option(a)
    a.set_defaults(
        run=lambda a: approvals.list_approvals(a.config, as_json=a.json, everything=a.all)
    )
    a = actions.add_parser("approve", help="approve a request (never your own)")
    a.add_argument("request_id", metavar="ID")
    a.add_argument("--reason", default="", help="why, for the record")
    _config_option(a)
    a.set_defaults(
        run=lambda a: approvals.decide(a.config, a.request_id, approve=True, reason=a.reason)
    )
    a = actions.add_parser("deny", help="deny a request, saying why")
    a.add_argument("request_id", metavar="ID")
    a.add_argument("--reason", required=True, help="why, for the requester")
    _config_option(a)
    a.set_defaults(
        run=lambda a: approvals.decide(a.config, a.request_id, approve=False, reason=a.reason)
    )


def _add_breakglass(commands: Any) -> None:
    p = commands.add_parser(
        "breakglass", help="emergency accounts: issue one-time codes, count them, report a use"
    )
    actions = p.add_subparsers(dest="breakglass_command", required=True, metavar="ACTION")
    b = actions.add_parser("issue", help="a new batch of one-time codes, shown once")
    b.add_argument("name", metavar="NAME")
    b.add_argument("--count", type=int, default=5, help="codes in the batch (default: 5)")
    _config_option(b)
    b.set_defaults(run=lambda a: breakglass.issue(a.config, a.name, a.count))
    b = actions.add_parser("codes", help="how many codes an account has left")
    b.add_argument("name", metavar="NAME")
    _config_option(b)
    b.set_defaults(run=lambda a: breakglass.codes(a.config, a.name))
    b = actions.add_parser("report", help="the incident record of a break-glass session")
    b.add_argument("session", metavar="SESSION")
    b.add_argument("--json", action="store_true", help="one JSON document")
    b.add_argument(
        "--key",
        type=Path,
        metavar="FILE",
        help="the auditors' private key: include the commands' output from the recordings",
    )
    _config_option(b)
    b.set_defaults(
        run=lambda a: breakglass.report(a.config, a.session, as_json=a.json, key_file=a.key)
    )


def _add_recordings(commands: Any) -> None:
    key_help = "the auditors' private key file (from bastion recordings keygen)"
    signer_help = "the bastion's recording-signing.pub (default: this bastion's own key)"
    p = commands.add_parser("play", help="verify, decrypt and play a session recording")
    p.add_argument("recording", metavar="ID|PATH")
    p.add_argument("--key", type=Path, required=True, metavar="FILE", help=key_help)
    p.add_argument("--speed", type=float, default=1.0, help="playback speed (default: 1)")
    p.add_argument(
        "--idle-limit", type=float, metavar="SECONDS", help="shorten pauses to at most this"
    )
    p.add_argument("--signer", type=Path, metavar="FILE", help=signer_help)
    _config_option(p)
    p.set_defaults(
        run=lambda a: recordings.play(
            a.config, a.recording, a.key, speed=a.speed, idle_limit=a.idle_limit, signer=a.signer
        )
    )

    p = commands.add_parser("recordings", help="session recordings: keys, list, export, prune")
    actions = p.add_subparsers(dest="recordings_command", required=True, metavar="ACTION")
    r = actions.add_parser("keygen", help="make the auditors' key pair (on an auditor's machine)")
    r.add_argument("name", type=Path, metavar="NAME", help="writes NAME.key and NAME.pub")
    r.add_argument("--passphrase", action="store_true", help="protect NAME.key by a passphrase")
    r.set_defaults(run=lambda a: recordings.keygen(a.name, passphrase=a.passphrase))
    r = actions.add_parser("list", help="recordings, their sessions and state")
    _config_option(r)
    r.set_defaults(run=lambda a: recordings.list_command(a.config))
    r = actions.add_parser("export", help="verify and decrypt to a plain asciicast v2 file")
    r.add_argument("recording", metavar="ID|PATH")
    r.add_argument("--key", type=Path, required=True, metavar="FILE", help=key_help)
    r.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.cast")
    r.add_argument("--signer", type=Path, metavar="FILE", help=signer_help)
    _config_option(r)
    r.set_defaults(
        run=lambda a: recordings.export(a.config, a.recording, a.key, a.output, signer=a.signer)
    )
    r = actions.add_parser("prune", help="remove recordings older than a given age")
    r.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 90d")
    r.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    _config_option(r)
    r.set_defaults(run=lambda a: recordings.prune(a.config, a.older_than, dry_run=a.dry_run))


def _serve(config: Path, workers: int | None) -> int:
    from bastion.ssh.supervisor import serve  # noqa: PLC0415 - asyncssh only when serving

    return serve(config, workers=workers)


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=user.DEFAULT_CONFIG,
        metavar="PATH",
        help="the bastion's config file (default: %(default)s)",
    )


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
