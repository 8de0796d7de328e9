"""The incident record of a break-glass session, from what the bastion kept of it.

Sources, each checked as it is read:

* the audit log (hash chain verified from its first line; a break is reported, and the
  events after it are marked unverified): the session's own events and those of the SSH
  connection it came from (the login, the login's alert);
* the code store: the code the login burnt (batch, when) and how many are left, by count;
* the recordings of its debug shells, verified against the bastion's signing key and
  decrypted with the auditors' private key when one is given: the commands and their
  output, as plain text (:mod:`bastion.recording.transcript`).

:func:`incident_record` builds one JSON-ready dict; :func:`render` words it for a terminal,
every string from an operator or a cluster neutralised.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from bastion.audit.chain import ChainBroken, ChainReader
from bastion.errors import BastionError
from bastion.recording.asciicast import events as cast_events
from bastion.recording.asciicast import parse_header
from bastion.recording.playback import split_lines
from bastion.recording.sealed import SealedReader
from bastion.recording.store import resolve
from bastion.recording.transcript import transcript
from bastion.state.breakglass_codes import BatchState, CodeUse
from bastion.terminal_text import printable

__all__ = [
    "AuditTrail",
    "debug_recordings",
    "incident_record",
    "read_output",
    "read_trail",
    "render",
]

_READ = 1 << 20
OUTPUT_LINES = 2000  # per debug shell in the text form; --json has them all


# ---------------------------------------------------------------------------- the audit log
class AuditTrail:
    """The events of one session and of the connection it came from."""

    def __init__(self, events: list[dict[str, Any]], problem: str | None, total: int) -> None:
        self.events = events
        self.problem = problem  # the first break of the chain, if any
        self.total = total  # lines read


def _lines(path: Path) -> Iterator[bytes]:
    try:
        log = path.open("rb")
    except OSError as exc:
        raise BastionError(
            f"cannot read the audit log {path}: {exc.strerror}",
            hint="run as root or the service user",
        ) from None
    with log:
        rest = b""
        while chunk := log.read(_READ):
            parts = (rest + chunk).split(b"\n")
            rest = parts.pop()
            for part in parts:
                yield part + b"\n"
        if rest:
            yield rest  # a torn last line: the chain reader says so


def read_trail(path: Path, session: str) -> AuditTrail:
    """Two passes over the log: the session's connection first, then the events."""
    connections: set[str] = set()
    for event in _events(path):
        if event.get("session") == session and event.get("event") == "session.opened":
            connection = event.get("connection")
            if isinstance(connection, str):
                connections.add(connection)
    if not connections:
        raise BastionError(
            f"there is no session {session} in the audit log {path}",
            hint="bastion audit search --event 'breakglass.*' lists the break-glass sessions",
        )
    chosen: list[dict[str, Any]] = []
    reader = _events(path)
    problem: str | None = None
    total = 0
    for event in reader:
        total += 1
        if "_chain_broken" in event:
            problem = str(event.pop("_chain_broken"))
        if event.get("session") == session or event.get("connection") in connections:
            chosen.append(event)
    return AuditTrail(chosen, problem, total)


def _events(path: Path) -> Iterator[dict[str, Any]]:
    """Every event, in order; the first one after a break of the chain carries the break
    as ``_chain_broken``, and the rest are parsed unverified."""
    chain: ChainReader | None = ChainReader()
    for raw in _lines(path):
        broken: ChainBroken | None = None
        event: Any = None
        if chain is not None:
            try:
                event = chain.feed(raw)
            except ChainBroken as exc:
                broken, chain = exc, None
        if event is None:
            try:
                event = json.loads(raw)
            except ValueError:
                event = {}
        if not isinstance(event, dict):
            event = {}
        if broken is not None:
            event["_chain_broken"] = str(broken)
        yield event


# ---------------------------------------------------------------------------- the record
def _first(events: Sequence[Mapping[str, Any]], name: str, **match: Any) -> dict[str, Any]:
    for event in events:
        if event.get("event") == name and all(event.get(k) == v for k, v in match.items()):
            return dict(event)
    return {}


def _all(events: Sequence[Mapping[str, Any]], name: str, **match: Any) -> list[dict[str, Any]]:
    return [
        dict(e)
        for e in events
        if e.get("event") == name and all(e.get(k) == v for k, v in match.items())
    ]


def _epoch(value: Any) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC).isoformat().replace("+00:00", "Z")
    return None


def _where(target: Any) -> str:
    if isinstance(target, Mapping):
        return "/".join(str(target.get(k, "?")) for k in ("cluster", "namespace", "pod"))
    return str(target)


_ALLOWED_FIELDS = (
    "time", "cluster", "namespace", "pod", "pod_uid", "target_container", "mode", "image",
    "grants", "vault_role",
)  # fmt: skip


def incident_record(
    session: str,
    trail: AuditTrail,
    *,
    batch: BatchState | None,
    uses: Sequence[CodeUse],
) -> dict[str, Any]:
    """The record, JSON-ready; BastionError when the session did not break the glass."""
    events = trail.events
    opened = _first(events, "session.opened", session=session)
    started = _first(events, "breakglass.started", session=session)
    refused = _first(events, "breakglass.reason_refused", session=session)
    if not (opened.get("break_glass") or started or refused):
        raise BastionError(
            f"session {session} is not a break-glass session",
            hint=f"bastion audit search --session {session} shows what it did",
        )
    connection = str(opened.get("connection", ""))
    login = _first(events, "login.succeeded", connection=connection)
    wiped = _first(events, "session.wiped", session=session)
    closed = _first(events, "session.state", session=session, outcome="closed")
    code = next((u for u in uses if u.connection == connection), None)
    debugs: list[dict[str, Any]] = []
    for attached in _all(events, "session.state", session=session, outcome="attached"):
        ended = next(
            (
                e
                for e in _all(events, "session.debug_ended", session=session)
                if e.get("recording") == attached.get("recording")
            ),
            {},
        )
        debugs.append(
            {
                "container": attached.get("container"),
                "pod": attached.get("pod"),
                "mode": attached.get("mode"),
                "image": attached.get("image"),
                "attached_at": attached.get("time"),
                "ended_at": ended.get("time"),
                "target": ended.get("target"),
                "exit_status": ended.get("exit_status"),
                "resources": ended.get("resources", []),
                "recording": attached.get("recording"),
                "recording_complete": ended.get("recording_complete"),
            }
        )
    return {
        "session": session,
        "user": opened.get("actor"),
        "key": login.get("key"),
        "factors": login.get("mfa"),
        "source": login.get("source", opened.get("source")),
        "source_port": login.get("source_port"),
        "connection": connection or None,
        "logged_in_at": login.get("time"),
        "opened_at": opened.get("time"),
        "started_at": started.get("time"),
        "ended_at": closed.get("time") or wiped.get("time"),
        "ending": wiped.get("ending"),
        "reason": started.get("reason"),
        "reason_refused": refused.get("problem"),
        "time_box": {
            "ends_at": _epoch(started.get("hard_deadline")),
            "idle_timeout_seconds": started.get("idle_timeout_seconds"),
        },
        "targets": [
            {
                "target": _where(e.get("target")),
                "at": e.get("time"),
                "mode": e.get("mode"),
                "reason": e.get("reason"),
            }
            for e in _all(events, "session.state", session=session, outcome="starting_debug")
        ],
        "allowed": [
            {k: e.get(k) for k in _ALLOWED_FIELDS}
            for e in _all(events, "session.debug_allowed", session=session)
        ],
        "refused": [
            {"time": e.get("time"), "target": _where(e.get("target") or e), "why": e.get("reason")}
            for e in _all(events, "session.debug_refused", session=session)
        ],
        "credentials": [
            {
                "time": e.get("time"),
                "kind": "browse" if e["event"] == "session.browse_credential_issued" else "debug",
                "cluster": e.get("cluster"),
                "namespace": e.get("namespace"),
                "vault_role": e.get("vault_role"),
                "service_account": e.get("service_account"),
                "lease": e.get("lease_id"),
                "lease_seconds": e.get("lease_seconds"),
            }
            for e in events
            if e.get("session") == session
            and e.get("event") in ("session.credential_issued", "session.browse_credential_issued")
        ],
        "debug_shells": debugs,
        "console_recordings": [
            e.get("recording")
            for e in _all(events, "session.console_recording", session=session, outcome="started")
        ],
        "wipe": {
            "ending": wiped.get("ending"),
            "outcome": wiped.get("outcome"),
            "resources": wiped.get("resources", []),
        },
        "alerts": [
            {
                "time": e.get("time"),
                "alert": e.get("alert"),
                "destination": e.get("destination"),
                "delivered": e["event"] == "breakglass.alert_delivered",
                "attempts": e.get("attempts"),
                "error": e.get("error"),
                "retrying": e.get("retrying"),
            }
            for e in events
            if e.get("event") in ("breakglass.alert_delivered", "breakglass.alert_failed")
        ],
        "code": {
            "batch": code.batch if code else None,
            "used_at": _epoch(code.used_at) if code else None,
            "burnt": code is not None,
            "left": batch.remaining if batch else 0,
            "issued_in_batch": batch.issued if batch else 0,
        },
        "audit": {
            "events": len(events),
            "lines_read": trail.total,
            "chain": "verified" if trail.problem is None else f"BROKEN: {trail.problem}",
        },
    }


def debug_recordings(record: Mapping[str, Any]) -> list[str]:
    return [d["recording"] for d in record["debug_shells"] if isinstance(d.get("recording"), str)]


def read_output(
    recordings_dir: Path,
    recording: str,
    key: X25519PrivateKey,
    trusted: bytes | None,
) -> dict[str, Any]:
    """A debug shell's output, verified and decrypted: ``lines`` (and ``input`` when it was
    recorded), or ``problem`` in one sentence."""
    try:
        path = resolve(recordings_dir, recording)
        with path.open("rb") as stream:
            reader = SealedReader(stream, str(path))
            if trusted is not None:
                reader.check_signer({trusted})
            lines = split_lines(reader.plaintext(key))
            parse_header(next(lines, b""))
            output: list[str] = []
            typed: list[str] = []
            for event in cast_events(lines):
                if event.code == "o":
                    output.append(event.data)
                elif event.code == "i":
                    typed.append(event.data)
            verdict = reader.verdict
    except (BastionError, ValueError, OSError) as exc:
        problem = exc.message if isinstance(exc, BastionError) else str(exc)
        return {"recording": recording, "problem": problem}
    result: dict[str, Any] = {
        "recording": recording,
        "verified": verdict.summary if verdict is not None else None,
        "lines": transcript(output),
    }
    if typed:
        result["input"] = transcript(typed)
    return result


# ---------------------------------------------------------------------------- the words
def _t(value: Any) -> str:
    """An RFC 3339 time of the log, shortened for reading."""
    text = str(value or "-")
    return text.replace("T", " ")[:19] + ("Z" if text.endswith("Z") else "")


def _s(value: Any) -> str:
    return printable(str(value)) if value is not None else "-"


def render(record: Mapping[str, Any], outputs: Sequence[Mapping[str, Any]], note: str) -> str:
    """The record for a terminal; ``note`` says what is missing from it, if anything."""
    lines = [f"Break-glass session {_s(record['session'])}"]
    lines += _who(record)
    lines += ["What was touched", *_touched(record)]
    lines += _wipe(record)
    lines += _outputs(record, outputs)
    if note:
        lines.append(note)
    if record["console_recordings"]:
        ids = ", ".join(_s(i) for i in record["console_recordings"])
        lines.append(f"Console recording(s): {ids} (replay with: bastion play ID --key FILE)")
    audit = record["audit"]
    lines.append(
        f"Audit: {audit['events']} events of {audit['lines_read']} lines, hash chain "
        f"{_s(audit['chain'])}"
    )
    return "\n".join(lines)


def _seconds(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{round(value)} s"
    return "-"


def _row(label: str, text: str) -> str:
    return f"  {label:<11} {text}"


def _who(r: Mapping[str, Any]) -> list[str]:
    box = r["time_box"]
    code = r["code"]
    rows = [
        _row("who", f"{_s(r['user'])} (key {_s(r['key'])}, factors {_s(r['factors'])})"),
        _row(
            "from",
            f"{_s(r['source'])} port {_s(r['source_port'])} (connection {_s(r['connection'])})",
        ),
        _row(
            "when",
            f"logged in {_t(r['logged_in_at'])}, broke the glass {_t(r['started_at'])}, "
            f"ended {_t(r['ended_at'])} ({_s(r['ending'])})",
        ),
        _row(
            "time box",
            f"until {_t(box['ends_at'])}, idle limit {_seconds(box['idle_timeout_seconds'])}",
        ),
        _row(
            "why",
            _s(r["reason"])
            if r["reason"] is not None
            else f"no reason: {_s(r['reason_refused'])} (nothing was started)",
        ),
        _row(
            "code",
            f"one of batch {_s(code['batch'])}, burnt {_t(code['used_at'])}; {code['left']} of "
            f"{code['issued_in_batch']} left"
            if code["burnt"]
            else f"no use found for this connection; {code['left']} left in the batch",
        ),
    ]
    rows += [_row("alert", _alert(alert)) for alert in r["alerts"]]
    if not r["alerts"]:
        rows.append(_row("alert", "NO delivery recorded"))
    return rows


def _alert(alert: Mapping[str, Any]) -> str:
    if alert["delivered"]:
        outcome = f"delivered ({alert['attempts']} attempt(s))"
    else:
        outcome = f"NOT delivered: {_s(alert['error'])}"
        outcome += " (retrying)" if alert["retrying"] else " (gave up)"
    return f"{_t(alert['time'])} {_s(alert['alert'])} to {_s(alert['destination'])}: {outcome}"


def _touched(r: Mapping[str, Any]) -> list[str]:
    lines = [
        f"  {_t(t['at'])}  debug asked: {_s(t['target'])} ({_s(t['mode'])})" for t in r["targets"]
    ]
    lines += [
        f"  {_t(a['time'])}  allowed: "
        + "/".join(_s(a[k]) for k in ("cluster", "namespace", "pod"))
        + f" container {_s(a['target_container'])}, image {_s(a['image'])}, Vault role "
        f"{_s(a['vault_role'])}"
        for a in r["allowed"]
    ]
    lines += [
        f"  {_t(x['time'])}  refused: {_s(x['target'])}: {_s(x['why'])}" for x in r["refused"]
    ]
    lines += [
        f"  {_t(c['time'])}  {c['kind']} credential: service account "
        f"{_s(c['service_account'])} in {_s(c['cluster'])}/{_s(c['namespace'])}, "
        f"{_s(c['lease_seconds'])} s"
        for c in r["credentials"]
    ]
    for shell in r["debug_shells"]:
        lines.append(
            f"  {_t(shell['attached_at'])}  debug container {_s(shell['container'])} in pod "
            f"{_s(shell['pod'])} ({_s(shell['mode'])}), ended {_t(shell['ended_at'])}, exit "
            f"status {_s(shell['exit_status'])}"
        )
        lines += [
            f"      {_s(res.get('kind'))}: {_s(res.get('outcome'))}" for res in shell["resources"]
        ]
    if not (r["targets"] or r["credentials"]):
        lines.append("  nothing: no debug was asked for and no credential was issued")
    return lines


def _wipe(r: Mapping[str, Any]) -> list[str]:
    wipe = r["wipe"]
    return [
        f"Wipe: {_s(wipe['ending'])}, {_s(wipe['outcome'])}",
        *(f"  {_s(res.get('kind'))}: {_s(res.get('outcome'))}" for res in wipe["resources"]),
    ]


def _outputs(r: Mapping[str, Any], outputs: Sequence[Mapping[str, Any]]) -> list[str]:
    lines: list[str] = []
    for shell, result in zip(r["debug_shells"], outputs, strict=False):
        lines.append(f"Output of {_s(shell['container'])} (recording {_s(result['recording'])})")
        if "problem" in result:
            lines.append(f"  not read: {_s(result['problem'])}")
            continue
        shown = result["lines"]
        lines += [f"  | {line}" for line in shown[:OUTPUT_LINES]]
        if len(shown) > OUTPUT_LINES:
            lines.append(f"  ... {len(shown) - OUTPUT_LINES} more lines (--json has them all)")
    return lines
