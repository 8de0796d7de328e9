"""``bastion audit verify | export | search``: check the log, feed a SIEM, answer a question.

* ``verify PATH [--pubkey FILE] [--checkpoints FILE]`` checks the hash chain, the head
  record, every checkpoint's signature, and the log against checkpoints shipped off-host;
  one sentence and an exit status per kind of failure (:data:`EXIT`). Given several logs
  (one chain per replica) or a directory of them, a verdict per chain, two files claiming
  one replica refused (:data:`DUPLICATE`), then a merged summary.
* ``export [--since T] [--follow] [--syslog]`` writes the log's lines, exactly as stored,
  to stdout (or to the configured syslog server), checking the chain as it reads: a broken
  chain stops the export with an error, so a SIEM never silently receives an edited line.
* ``search --user U --since T --pod P --session S --event E`` prints matching events for
  a human, one line each, every string neutralised for the terminal; over several chains
  (``--log`` repeated, or a directory), merged in time order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import heapq
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bastion.audit.chain import (
    REPLICA,
    ChainBroken,
    ChainFacts,
    ChainReader,
    Verdict,
    VerdictKind,
)
from bastion.audit.chain import verify as verify_chain
from bastion.audit.checkpoint import is_signed
from bastion.audit.log import head_path, read_head, rfc3339
from bastion.audit.ship import ShipFailed, SyslogTls
from bastion.durations import parse_duration
from bastion.errors import BastionError
from bastion.recording.key_files import read_signer_public_key
from bastion.terminal_text import printable

__all__ = ["EXIT", "Query", "add_commands", "describe", "export", "search", "verify"]

# Exit status of ``verify`` per verdict; 2: the check could not be made at all.
EXIT: dict[VerdictKind, int] = {
    "ok": 0,
    "broken": 1,
    "forged": 3,
    "truncated": 4,
    "diverged": 5,
    "unsigned": 6,
    "bad_rotation": 7,
}
CANNOT_CHECK = 2
# Two chains given claim one replica (a swapped or duplicated chain): refused.
DUPLICATE = 8
_WORD: dict[VerdictKind, str] = {
    "ok": "OK",
    "broken": "BROKEN",
    "forged": "FORGED",
    "truncated": "TRUNCATED",
    "diverged": "REWRITTEN",
    "unsigned": "UNSIGNED",
    "bad_rotation": "FORGED ROTATION",
}
_FOLLOW_POLL = 0.5
_READ = 1 << 20


def add_commands(commands: Any, config_option: Callable[[argparse.ArgumentParser], None]) -> None:
    """The ``audit`` command and its actions, for the ``bastion`` parser."""
    p = commands.add_parser("audit", help="check, export and search the audit log")
    actions = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")

    v = actions.add_parser(
        "verify", help="check the chain, the checkpoints' signatures, and truncation"
    )
    v.add_argument(
        "paths",
        type=Path,
        nargs="+",
        metavar="PATH",
        help="a log, several (one chain per replica), or a directory of them (its *.jsonl)",
    )
    v.add_argument("--head", type=Path, help="head file (default: PATH.head; one PATH only)")
    v.add_argument(
        "--no-head",
        action="store_true",
        help="check the chain only (a copy without its head file): tail truncation is not seen",
    )
    v.add_argument(
        "--pubkey",
        type=Path,
        metavar="FILE",
        action="append",
        help="the audit-signing.pub the log started with: check every checkpoint's "
        "signature, following key rotations recorded in the log; once per replica's key "
        "when the chains were signed by several",
    )
    v.add_argument(
        "--checkpoints",
        type=Path,
        metavar="FILE",
        help="checkpoints received off-host (syslog or webhook), one per line: the log must "
        "still hold what they signed (needs --pubkey); with several chains, each replica's",
    )
    v.set_defaults(
        run=lambda a: verify(
            a.paths, head=a.head, no_head=a.no_head, pubkey=a.pubkey, checkpoints=a.checkpoints
        )
    )

    e = actions.add_parser("export", help="the log's lines as JSON lines, for a SIEM")
    e.add_argument("--since", metavar="T", help="from time T (2026-11-28T12:00:00Z) or age (2h)")
    e.add_argument("--follow", action="store_true", help="keep sending new lines as they come")
    e.add_argument(
        "--syslog",
        action="store_true",
        help="send to audit.ship.syslog of the config instead of stdout",
    )
    e.add_argument("--log", type=Path, metavar="FILE", help="another copy of the log to read")
    config_option(e)
    e.set_defaults(
        run=lambda a: export(
            a.config, log=a.log, since=a.since, follow=a.follow, to_syslog=a.syslog
        )
    )

    s = actions.add_parser("search", help="matching events, one readable line each")
    s.add_argument("--user", metavar="U", help="the operator (actor or user)")
    s.add_argument("--since", metavar="T", help="from time T (2026-11-28T12:00:00Z) or age (2h)")
    s.add_argument("--until", metavar="T", help="up to time T, or age")
    s.add_argument("--pod", metavar="P", help="events naming pod P")
    s.add_argument("--session", metavar="S", help="session S (and the login of its connection)")
    s.add_argument("--event", metavar="E", help="event name or pattern, e.g. 'login.*'")
    s.add_argument(
        "--log",
        type=Path,
        metavar="FILE",
        action="append",
        help="a copy of the log to read instead of the config's; repeat it (or give a "
        "directory) to search several replicas' chains, merged in time order",
    )
    config_option(s)
    s.set_defaults(
        run=lambda a: search(
            a.config,
            log=a.log,
            query=Query(
                user=a.user,
                since=_time_arg(a.since, "--since"),
                until=_time_arg(a.until, "--until"),
                pod=a.pod,
                session=a.session,
                event=a.event,
            ),
        )
    )


# ---------------------------------------------------------------------------- verify
def verify(
    paths: Path | Sequence[Path],
    *,
    head: Path | None,
    no_head: bool,
    pubkey: Path | Sequence[Path] | None = None,
    checkpoints: Path | None = None,
) -> int:
    """Verify one chain, or several (one per replica): a verdict per chain; with several,
    two chains claiming one replica are refused and a merged summary follows."""
    try:
        logs, keys, shipped = _inputs(paths, head, pubkey, checkpoints)
    except BastionError as exc:
        print(f"CANNOT CHECK: {exc}", file=sys.stderr)
        return CANNOT_CHECK
    if isinstance(paths, Path) or (len(paths) == 1 and logs == list(paths)):
        # One log: checked against what was shipped of its replica (a SIEM's file holds
        # every replica's checkpoints), or of every chain for a log without a replica id.
        replica = _first_replica(logs[0])
        own = [c for c in shipped if replica is None or c.get(REPLICA) in (None, replica)]
        return _report(logs[0], _one(logs[0], head, no_head, keys, own), name=str(logs[0]))
    return _verify_chains(logs, no_head, keys, shipped)


def _inputs(
    paths: Path | Sequence[Path],
    head: Path | None,
    pubkey: Path | Sequence[Path] | None,
    checkpoints: Path | None,
) -> tuple[list[Path], list[Ed25519PublicKey], list[dict[str, Any]]]:
    """The logs, keys and shipped checkpoints to check; BastionError when they cannot be."""
    logs = chain_files([paths] if isinstance(paths, Path) else paths)
    if head is not None and len(logs) > 1:
        raise BastionError("--head names the head of one log: give one PATH with it")
    keys = _public_keys([pubkey] if isinstance(pubkey, Path) else pubkey or [])
    shipped = _shipped(checkpoints) if checkpoints is not None else []
    if shipped and not keys:
        raise BastionError(
            "checking shipped checkpoints needs the bastion's public key: give --pubkey"
        )
    return logs, keys, shipped


def chain_files(paths: Sequence[Path]) -> list[Path]:
    """The logs named: each file, and each directory's ``*.jsonl`` (its chains)."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            found.append(path)
            continue
        chains = sorted(p for p in path.glob("*.jsonl") if p.is_file())
        if not chains:
            raise BastionError(f"{path} is a directory without audit logs (*.jsonl) in it")
        found.extend(chains)
    repeated = {p for p in found if found.count(p) > 1}
    if repeated:
        raise BastionError(f"{sorted(repeated)[0]} is given twice")
    return found


@dataclass(frozen=True)
class _Checked:
    """One chain's verdict, or why it could not be checked."""

    path: Path
    verdict: Verdict | None
    problem: str | None = None


def _one(
    path: Path,
    head: Path | None,
    no_head: bool,
    keys: Sequence[Ed25519PublicKey],
    shipped: Sequence[Mapping[str, Any]],
) -> _Checked:
    try:
        verdict = _verdict(path, head=head, no_head=no_head, keys=keys, shipped=shipped)
    except BastionError as exc:
        return _Checked(path, None, str(exc))
    except OSError as exc:
        return _Checked(path, None, f"{path}: cannot read the audit log: {exc.strerror}")
    return _Checked(path, verdict)


def _report(path: Path, checked: _Checked, *, name: str) -> int:
    """Print one chain's verdict (``name`` says which); its exit status."""
    verdict = checked.verdict
    if verdict is None:
        print(f"CANNOT CHECK: {checked.problem}", file=sys.stderr)
        return CANNOT_CHECK
    if verdict.ok:
        print(verdict.message if name == str(path) else f"{name}: {verdict.message}")
        return 0
    print(f"{_WORD[verdict.kind]}: {name}: {verdict.message}", file=sys.stderr)
    return EXIT[verdict.kind]


def _verify_chains(
    logs: Sequence[Path],
    no_head: bool,
    keys: Sequence[Ed25519PublicKey],
    shipped: Sequence[Mapping[str, Any]],
) -> int:
    by_replica: dict[str | None, list[Mapping[str, Any]]] = {}
    for checkpoint in shipped:
        replica = checkpoint.get(REPLICA)
        by_replica.setdefault(replica if isinstance(replica, str) else None, []).append(checkpoint)
    results: list[_Checked] = []
    for path in logs:
        # Whose chain a file is shows once it is read; its shipped checkpoints are those
        # naming the replica of its first line.
        replica = _first_replica(path)
        results.append(_one(path, None, no_head, keys, by_replica.pop(replica, [])))
    statuses = [_report(c.path, c, name=_chain_name(c)) for c in results]
    refused = _duplicates(results)
    for replica, what in sorted(by_replica.items(), key=lambda item: str(item[0])):
        whose = f"replica {replica!r}" if replica else "a log without a replica id"
        refused.append(
            f"TRUNCATED: {len(what)} shipped checkpoints are of {whose}, whose chain was not "
            "given: it is missing (give its log too, or verify it alone)"
        )
    for line in refused:
        print(line, file=sys.stderr)
    if refused:
        return DUPLICATE if any(r.startswith("DUPLICATE") for r in refused) else EXIT["truncated"]
    failed = [status for status in statuses if status != 0]
    if failed:
        return failed[0]
    print(merged_summary([c.verdict for c in results if c.verdict is not None], logs))
    return 0


def _chain_name(checked: _Checked) -> str:
    facts = checked.verdict.chain if checked.verdict is not None else None
    if facts is None or facts.replica is None:
        return str(checked.path)
    return f"{checked.path} (replica {facts.replica})"


def _first_replica(path: Path) -> str | None:
    """The replica the first line naming one names (a log from before replica ids gains
    one when an upgraded writer continues it); None when no line names one."""
    try:
        with path.open("rb") as log:
            for raw in log:
                try:
                    line = json.loads(raw)
                except ValueError:
                    return None
                replica = line.get(REPLICA) if isinstance(line, dict) else None
                if isinstance(replica, str):
                    return replica
    except OSError:
        return None
    return None


def _duplicates(results: Sequence[_Checked]) -> list[str]:
    """Two files claiming one replica: a chain swapped in for another, or given twice."""
    seen: dict[str, tuple[Path, ChainFacts]] = {}
    found: list[str] = []
    for checked in results:
        facts = checked.verdict.chain if checked.verdict is not None else None
        if facts is None or facts.replica is None:
            continue
        if facts.replica not in seen:
            seen[facts.replica] = (checked.path, facts)
            continue
        other_path, other = seen[facts.replica]
        why = (
            "the same chain (one genesis) twice: a copy; give one of them"
            if other.genesis == facts.genesis
            else f"different chains (genesis {str(other.genesis)[:12]}… and "
            f"{str(facts.genesis)[:12]}…): a swapped or duplicated chain; verify each alone "
            "and find out which one the replica wrote"
        )
        found.append(
            f"DUPLICATE: {other_path} and {checked.path} both claim replica {facts.replica!r}, "
            f"{why}"
        )
    return found


def merged_summary(verdicts: Sequence[Verdict], logs: Sequence[Path]) -> str:
    """Several verified chains as one timeline: the total, then each chain by its first
    event's time (replica, span, events, how far it is signed)."""
    rows = sorted(
        zip(verdicts, logs, strict=True),
        key=lambda row: (row[0].chain.first_time if row[0].chain else None) or "",
    )
    times = [t for v, _ in rows if v.chain for t in (v.chain.first_time, v.chain.last_time) if t]
    span = f", {min(times)} to {max(times)}" if times else ""
    lines = [f"merged: {len(rows)} chains, {sum(v.events for v, _ in rows)} events{span}"]
    for verdict, path in rows:
        facts = verdict.chain
        if facts is None or facts.first_time is None:
            lines.append(f"  (empty)  {path}")
            continue
        signed = f"signed to line {facts.signed_to}" if facts.signed_to else "signatures unchecked"
        lines.append(
            f"  {facts.first_time} to {facts.last_time}  {facts.replica or '-'}  "
            f"{verdict.events} events, {signed}  {path}"
        )
    return "\n".join(lines)


def _verdict(
    path: Path,
    *,
    head: Path | None,
    no_head: bool,
    keys: Sequence[Ed25519PublicKey],
    shipped: Sequence[Mapping[str, Any]],
) -> Verdict:
    """The verdict on ``path``; BastionError when the check cannot be made."""
    head_file = head or head_path(path)
    try:
        recorded = None if no_head else read_head(head_file)
    except ValueError as exc:
        raise BastionError(str(exc)) from None
    with _open_log(path) as log:
        if recorded is None and not no_head and log.read(1):
            raise BastionError(
                f"{path}: the head file {head_file} is missing, so a truncated tail cannot "
                "be ruled out; pass --head FILE, or --no-head to check the chain alone"
            )
        log.seek(0)
        return verify_chain(log, recorded, public_key=keys or None, shipped=shipped)


def _open_log(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except OSError as exc:
        raise BastionError(f"{path}: cannot read the audit log: {exc.strerror}") from None


def _public_keys(paths: Sequence[Path]) -> list[Ed25519PublicKey]:
    return [Ed25519PublicKey.from_public_bytes(read_signer_public_key(p)) for p in paths]


def _shipped(path: Path) -> list[dict[str, Any]]:
    """Checkpoint lines as a receiver stored them: one JSON object per line, possibly after
    a syslog header; other lines (events shipped with ``events: all``, noise) are skipped."""
    try:
        text = path.read_bytes().decode("utf-8", "replace")
    except OSError as exc:
        raise BastionError(f"{path}: cannot read the shipped checkpoints: {exc.strerror}") from None
    found: list[dict[str, Any]] = []
    for line in text.splitlines():
        start, end = line.find("{"), line.rfind("}")
        if start < 0 or end < start:
            continue
        try:
            item = json.loads(line[start : end + 1])
        except ValueError:
            continue
        if isinstance(item, dict) and is_signed(item):
            found.append(item)
    if not found:
        raise BastionError(
            f"{path} holds no checkpoint (lines with an audit.checkpoint event)",
            hint="give the file where the syslog server or webhook stored what the bastion sent",
        )
    return found


# ---------------------------------------------------------------------------- reading
def _log_path(config_path: Path, log: Path | None) -> Path:
    if log is not None:
        return log
    from bastion.config import load_config  # noqa: PLC0415 - only when no --log is given

    return load_config(config_path, check_files=False).paths.audit_log


def _time_arg(text: str | None, option: str) -> str | None:
    """``--since``/``--until`` as the log writes times (so that strings compare), from an
    RFC 3339 time, a date, or an age such as ``2h``."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            age = parse_duration(text)
        except ValueError:
            raise BastionError(
                f"{option} {text!r} is neither a time (2026-11-28T12:00:00Z, 2026-11-28) nor "
                "an age (90m, 2h, 7d)"
            ) from None
        moment = datetime.now(UTC) - age
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return rfc3339(moment)


class _LogReader:
    """Complete lines of an open log file as they come, the chain checked from line 1. At
    the first line that breaks it, ``broken`` is set and reading stops, unless ``lenient``:
    then the rest is parsed unchecked (for a human looking into a damaged log)."""

    def __init__(self, log: BinaryIO, *, lenient: bool = False) -> None:
        self._log = log
        self._chain = ChainReader()
        self._pending = b""
        self.lenient = lenient
        self.broken: ChainBroken | None = None

    def read(self) -> list[tuple[bytes, dict[str, Any]]]:
        """The next complete lines (about 1 MiB at most); empty at the end for now."""
        found: list[tuple[bytes, dict[str, Any]]] = []
        while not found:
            if self.broken is not None and not self.lenient:
                return []
            chunk = self._log.read(_READ)
            if not chunk:
                return []  # a line still being written stays pending for the next read
            parts = (self._pending + chunk).split(b"\n")
            self._pending = parts.pop()
            for part in parts:
                raw = part + b"\n"
                event = self._event(raw)
                if event is None:
                    break
                found.append((raw, event))
        return found

    def _event(self, raw: bytes) -> dict[str, Any] | None:
        if self.broken is None:
            try:
                return self._chain.feed(raw)
            except ChainBroken as exc:
                self.broken = exc
                if not self.lenient:
                    return None
        try:
            event = json.loads(raw)
        except ValueError:
            return {}
        return event if isinstance(event, dict) else {}


# ---------------------------------------------------------------------------- export
def export(
    config_path: Path,
    *,
    log: Path | None = None,
    since: str | None = None,
    follow: bool = False,
    to_syslog: bool = False,
    out: BinaryIO | None = None,
) -> int:
    path = _log_path(config_path, log)
    start = _time_arg(since, "--since")
    send = _syslog_destination(config_path) if to_syslog else None
    return asyncio.run(_export(path, start, follow, out or sys.stdout.buffer, send))


async def _export(
    path: Path, since: str | None, follow: bool, out: BinaryIO, send: SyslogTls | None
) -> int:
    sent = 0
    held: list[tuple[bytes, dict[str, Any]]] = []
    try:
        with _open_log(path) as log:
            reader = _LogReader(log)
            while True:
                lines = reader.read()
                ready, held = _durable(path, held + lines) if follow else (lines, [])
                batch = [raw for raw, event in ready if since is None or event["time"] >= since]
                if batch and send is not None:
                    await send.send(batch)
                elif batch:
                    out.write(b"".join(batch))
                    out.flush()
                sent += len(batch)
                if reader.broken is not None:
                    print(
                        f"BROKEN: {path}: {reader.broken}; the export stopped there (run "
                        f"bastion audit verify {path})",
                        file=sys.stderr,
                    )
                    return 1
                if not lines:
                    if not follow:
                        break
                    await asyncio.sleep(_FOLLOW_POLL)
    except BrokenPipeError:
        # The reader went away (| head): not an error; keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ShipFailed as exc:
        print(f"bastion: {exc}; {sent} lines were sent before it", file=sys.stderr)
        return 1
    finally:
        if send is not None:
            await send.aclose()
    if send is not None:
        print(f"sent {sent} lines to {send.where}", file=sys.stderr)
    return 0


def _durable(
    path: Path, lines: list[tuple[bytes, dict[str, Any]]]
) -> tuple[list[tuple[bytes, dict[str, Any]]], list[tuple[bytes, dict[str, Any]]]]:
    """The lines the head record says are synced, and the rest (held back while following:
    a write that fails after its lines became visible is cut from the log again)."""
    try:
        head = read_head(head_path(path))
    except ValueError:
        head = None
    if head is None:
        return lines, []
    cut = next((i for i, (_, event) in enumerate(lines) if event.get("seq", 0) > head.seq), None)
    return (lines, []) if cut is None else (lines[:cut], lines[cut:])


def _syslog_destination(config_path: Path) -> SyslogTls:
    from bastion.config import load_config  # noqa: PLC0415

    config = load_config(config_path, check_files=False)
    ship = config.audit.ship
    if ship is None or ship.syslog is None:
        raise BastionError(
            f"{config_path} names no syslog server",
            hint="set audit.ship.syslog (address, ca_file) in the config, or export to stdout",
        )
    host, port = ship.syslog.host_port()
    return SyslogTls(host, port, ship.syslog.ca_file)


# ---------------------------------------------------------------------------- search
@dataclass(frozen=True)
class Query:
    user: str | None = None
    since: str | None = None  # times as the log writes them, compared as strings
    until: str | None = None
    pod: str | None = None
    session: str | None = None
    event: str | None = None

    def matches(self, event: Mapping[str, Any], connections: set[str]) -> bool:
        time = str(event.get("time", ""))
        if self.since is not None and time < self.since:
            return False
        if self.until is not None and time > self.until:
            return False
        if self.user is not None and self.user not in (event.get("actor"), event.get("user")):
            return False
        if self.event is not None and not fnmatch.fnmatchcase(
            str(event.get("event", "")), self.event
        ):
            return False
        if self.pod is not None and not _names_pod(event, self.pod):
            return False
        if self.session is not None:
            # The session's own events, and those of the connection it came from (its login,
            # the connection's end), which carry the key, the second factor and the source.
            return event.get("session") == self.session or event.get("connection") in connections
        return True


def _names_pod(event: Mapping[str, Any], pod: str) -> bool:
    if event.get("pod") == pod:
        return True
    target = event.get("target")
    if isinstance(target, dict):
        return target.get("pod") == pod
    if isinstance(target, str):
        return target.rsplit("/", 1)[-1] == pod
    return False


def search(
    config_path: Path,
    *,
    query: Query,
    log: Path | Sequence[Path] | None = None,
    out: TextIO | None = None,
) -> int:
    """Print the events matching ``query``; with several logs (replicas' chains), their
    events merged in time order."""
    out = out or sys.stdout
    given = [log] if isinstance(log, Path) else list(log or [])
    paths = chain_files(given) if given else [_log_path(config_path, None)]
    connections: set[str] = set()
    if query.session is not None:
        for path in paths:
            connections |= _connections_of(path, query.session)
    count = 0
    with contextlib.ExitStack() as files:
        readers = [_LogReader(files.enter_context(_open_log(p)), lenient=True) for p in paths]
        streams = [_events(reader) for reader in readers]
        for event in heapq.merge(*streams, key=lambda e: str(e.get("time", ""))):
            if query.matches(event, connections):
                print(describe(event), file=out)
                count += 1
    for path, reader in zip(paths, readers, strict=True):
        if reader.broken is not None:
            print(
                f"warning: {path}: {reader.broken}; events from there on are shown unverified "
                f"(run bastion audit verify {path})",
                file=sys.stderr,
            )
    if count == 0:
        print("no event matches", file=sys.stderr)
    return 0


def _events(reader: _LogReader) -> Iterator[dict[str, Any]]:
    while lines := reader.read():
        for _, event in lines:
            yield event


def _connections_of(path: Path, session: str) -> set[str]:
    found: set[str] = set()
    with _open_log(path) as file:
        for event in _events(_LogReader(file, lenient=True)):
            if event.get("session") == session and event.get("event") == "session.opened":
                connection = event.get("connection")
                if isinstance(connection, str):
                    found.add(connection)
    return found


_SKIPPED = frozenset({"seq", "time", "event", "session", "actor", "outcome", "prev", "hash"})
_VALUE_LIMIT = 100


def describe(event: Mapping[str, Any]) -> str:
    """One line for a human: time, line, event, outcome, who, session, then the event's own
    fields as ``name=value`` in the order they were recorded; every string neutralised."""
    time = str(event.get("time", "?")).replace("T", " ")
    head = [
        time[:19] + ("Z" if time.endswith("Z") else ""),
        f"#{event.get('seq', '?')}",
        str(event.get("event", "?")),
        str(event.get("outcome", "?")),
        str(event.get("actor", "?")),
        f"session={event['session']}" if event.get("session") else "",
    ]
    fields = [f"{name}={_value(value)}" for name, value in event.items() if name not in _SKIPPED]
    return printable(" ".join(part for part in (*head, *fields) if part))


def _value(value: Any) -> str:
    if isinstance(value, str):
        # Neutralised first, so that a control character reads as "?" wherever it is.
        shown = printable(value)
        text = shown if shown and " " not in shown else json.dumps(shown, ensure_ascii=False)
    else:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= _VALUE_LIMIT else text[: _VALUE_LIMIT - 1] + "…"
