"""Redact secrets from a terminal's output stream before it is recorded. Pure.

:class:`StreamRedactor` is fed the output chunks of one terminal, in order, and returns
redacted bytes; :meth:`~StreamRedactor.flush` at the end returns what it held back. What it
replaces by ``[REDACTED:kind]``:

* ``session-secret``: the session's own secrets, given as exact strings at the start or
  later (the Kubernetes token, the Vault lease id, secret-backed env values the broker
  knows), and their base64 form (what ``kubectl get secret -o yaml`` shows). Strings shorter
  than :data:`MIN_KNOWN_SECRET` bytes are ignored: they would blank out ordinary words;
* ``private-key``: PEM private-key blocks (``-----BEGIN ... PRIVATE KEY-----`` to its END
  line), whatever the line breaks (``\\n``, the terminal's ``\\r\\n``, JSON's ``\\\\n``). A
  block whose END does not come within :data:`PRIVATE_KEY_MAX` bytes is redacted anyway, as
  far as the characters a PEM body can hold go (and likewise a block the stream ends in);
* ``jwt``, ``vault-token`` (``hvs.``/``hvb.``/``hvr.`` and the older ``s.``/``b.``/``r.``),
  ``aws-key`` (``AKIA``/``ASIA`` access key ids), ``aws-secret-key`` (the value after
  ``aws_secret_access_key``), and ``assignment``: the value after ``password``, ``passwd``,
  ``passphrase``, ``pwd``, ``secret``, ``token``, ``credential(s)`` or ``api/access/
  private/client/signing/encryption/master/auth`` + ``key`` and ``=`` or ``:`` (also quoted
  as in JSON, also after colour escapes); the name stays readable: ``DB_PASSWORD=[REDACTED:
  assignment]``.

**Chunk boundaries.** The result does not depend on how the stream is cut into chunks: it
is what one left-to-right regex pass over the whole stream would give (property-tested by
splitting planted secrets at every byte). To get there the redactor holds back the end of
what it was given when that end could be the start of a secret:

* a partly arrived lead (``"pas"``, ``"-----BEG"``, ``"eyJ"`` cut short...): at most
  :data:`TAIL` bytes;
* a partly arrived known secret: at most the longest known secret, minus one byte;
* a candidate whose end is not known yet: a private key until its END line (at most
  :data:`PRIVATE_KEY_MAX` bytes plus an END line), a JWT until its second dot (at most
  about 24 KiB), an assignment until its value starts, a fixed-length key id until the
  character after it shows where it ends (a few dozen bytes).

So the hold is bounded by about 32 KiB (plus the longest known secret), and is nothing at
all for most output. Secrets whose end is a run of token characters (a JWT's signature, a
Vault token, an unquoted value) are not held while the run lasts: the marker goes out at
once and the rest of the run is dropped as it arrives.

**Speed.** The hot loop never looks at single bytes in Python. CPython's ``re`` tries every
alternative of one big pattern at every byte (about 5 MB/s here), so each chunk gets a few
literal scans instead (``-----BEGIN``, ``eyJ``, ``hv?.``, ``A?IA``, 24 characters after a
dot, and on a lower-cased copy ``k(ey|en)``, ``cre(t|dential)``, ``p(ass|wd)``; each runs at
memory speed), and the exact pattern is tried only where one of them hit, then on the last
:data:`TAIL` bytes for partly arrived leads. ``bench/recording_bench.py`` measures it.

Not recognised: secrets with none of these shapes that the bastion was not told about, and
secrets that a full-screen program (an editor, a pager) draws with cursor movements between
their characters.
"""

from __future__ import annotations

import base64
import bisect
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CONTEXT",
    "MAX_HOLD",
    "MIN_KNOWN_SECRET",
    "PRIVATE_KEY_MAX",
    "TAIL",
    "StreamRedactor",
    "final_pattern",
]

MIN_KNOWN_SECRET: Final = 6
PRIVATE_KEY_MAX: Final = 32 * 1024
# The longest partly arrived lead that no literal scan can see: "s." plus 23 characters of an
# old-style Vault token is the longest (25 bytes); the rest are shorter.
TAIL: Final = 32
# Bytes before the held tail that stay in the buffer (already emitted or dropped), so that
# ``\b`` and the look-behinds of ``api_key`` see the real characters before a position.
CONTEXT: Final = 16

_JWT_HEADER_MAX: Final = 8 * 1024
_JWT_PAYLOAD_MAX: Final = 16 * 1024
# The most a redactor without known secrets holds back: a private key waiting for its END
# line (its BEGIN line, the limit, an END line). Known secrets add their longest, minus one.
MAX_HOLD: Final = PRIVATE_KEY_MAX + 256

# ----------------------------------------------------------------------------- patterns
# Each kind: full alternatives (F), "open" alternatives that match a complete lead whose end
# has not arrived (O, anchored at \Z), and partly arrived leads (P, anchored at \Z, found by
# searching the last TAIL bytes). A group name's suffix says how a match ends:
#   _run: a run of token characters: when it reaches the end of the buffer the marker goes
#         out and the rest of the run is dropped as it comes (see _SWALLOW);
#   _edge: ends with \b: held when it reaches the end of the buffer (the next byte decides);
#   no suffix: closed (it ends with its own terminator).

_PEM_CHARS = rb"[A-Za-z0-9+/=\s:,\\-]"  # base64, line breaks, "Proc-Type: 4,ENCRYPTED", \n
_PEM_BEGIN = rb"-----BEGIN (?:[A-Z0-9]{1,16} ){0,4}PRIVATE KEY(?: BLOCK)?-----"
_PEM_END = rb"-----END (?:[A-Z0-9]{1,16} ){0,4}PRIVATE KEY(?: BLOCK)?-----"
_B64URL = rb"[A-Za-z0-9_-]"
_SGR = rb"(?:\x1b\[[0-9;]{0,16}m){0,4}"
_SGR_OPEN = _SGR + rb"(?:\x1b(?:\[[0-9;]{0,16})?)?"

_KEY_PREFIXES = ("api", "access", "private", "client", "signing", "encryption", "master", "auth")
_KEY_BEHIND = b"|".join(b"(?<=%s)|(?<=%s[_-])" % (p.encode(), p.encode()) for p in _KEY_PREFIXES)
_KEYWORD = (
    rb"(?:pass(?:word|wd|phrase)?|pwd|secret|token|credentials?|(?:" + _KEY_BEHIND + rb")key)"
)
_KEYWORDS = ("password", "passwd", "passphrase", "pwd", "secret", "token", "credentials")
_LEAD_TAIL = rb"(?:[_-][A-Za-z0-9_-]{0,63})?[\"']?[ \t]{0,16}"


def _value(name: str) -> bytes:
    """An assignment's value: quoted (to its closing quote, if any) or a bare run."""
    n = name.encode()
    return (
        rb"(?P<%s_value>" % n
        + _SGR
        + rb"(?:(?P<%s_dq_run>\"[^\"\r\n]*\"?)|(?P<%s_sq_run>'[^'\r\n]*'?)" % (n, n)
        + rb"|(?P<%s_bare_run>[^\s,;&\"'\x1b]+)))" % n
    )


def _prefixes(words: Iterable[str]) -> bytes:
    """Every proper, non-empty prefix of ``words``, as an alternation."""
    found = sorted({w[:i] for w in words for i in range(1, len(w))}, key=lambda s: (-len(s), s))
    return b"|".join(re.escape(p.encode()) for p in found)


@dataclass(frozen=True)
class _Kind:
    label: str  # what the marker says
    full: tuple[tuple[str, bytes], ...]
    open: tuple[bytes, ...] = ()
    partial: tuple[bytes, ...] = ()


_KINDS: Final = (
    _Kind(
        "private-key",
        full=(
            ("pem", _PEM_BEGIN + _PEM_CHARS + rb"{0,%d}?" % PRIVATE_KEY_MAX + _PEM_END),
            # No END line within the limit, or the characters of a PEM body stop first.
            ("pem_cut_run", _PEM_BEGIN + _PEM_CHARS + rb"*"),
        ),
        open=(
            _PEM_BEGIN + _PEM_CHARS + rb"{0,%d}\Z" % (PRIVATE_KEY_MAX + 96),
            rb"-----BEGIN [A-Z0-9 ]{0,90}-{0,4}\Z",
        ),
        partial=(_prefixes(["-----BEGIN "]),),
    ),
    _Kind(
        "jwt",
        full=(
            (
                "jwt_run",
                rb"eyJ%s{8,%d}\.eyJ%s{8,%d}\.%s*"
                % (_B64URL, _JWT_HEADER_MAX, _B64URL, _JWT_PAYLOAD_MAX, _B64URL),
            ),
        ),
        open=(
            rb"eyJ%s{0,%d}(?:\.(?:e(?:y(?:J%s{0,%d})?)?)?)?\Z"
            % (_B64URL, _JWT_HEADER_MAX, _B64URL, _JWT_PAYLOAD_MAX),
        ),
        partial=(rb"ey?",),
    ),
    _Kind(
        "vault-token",
        full=(
            ("vault_run", rb"hv[sbr]\.%s{20,}" % _B64URL),
            ("vault_legacy_edge", rb"\b[sbr]\.[A-Za-z0-9]{24}\b"),
        ),
        open=(rb"hv[sbr]\.%s{0,19}\Z" % _B64URL,),
        partial=(rb"h(?:v[sbr]?)?", rb"\b[sbr](?:\.[A-Za-z0-9]{0,23})?"),
    ),
    _Kind(
        "aws-key",
        full=(("aws_key_edge", rb"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),),
        open=(rb"\b(?:AKIA|ASIA)[0-9A-Z]{0,15}\Z",),
        partial=(rb"\b(?:AKI|ASI|AK|AS|A)",),
    ),
    _Kind(
        "aws-secret-key",
        full=(
            (
                "aws_secret",
                rb"(?P<aws_secret_lead>(?i:aws_secret_access_key)[\"']?[ \t]{0,16}[=:][ \t]{0,16})"
                + _value("aws_secret"),
            ),
        ),
        open=(
            rb"(?i:aws_secret_access_key)[\"']?[ \t]{0,16}"
            + rb"(?:[=:][ \t]{0,16}"
            + _SGR_OPEN
            + rb")?\Z",
        ),
        partial=(rb"(?i:" + _prefixes(["aws_secret_access_key"]) + rb")",),
    ),
    _Kind(
        "assignment",
        full=(
            (
                "assignment",
                rb"(?P<assignment_lead>(?i:"
                + _KEYWORD
                + rb")"
                + _LEAD_TAIL
                + rb"[=:][ \t]{0,16})"
                + _value("assignment"),
            ),
        ),
        open=(
            rb"(?i:"
            + _KEYWORD
            + rb")"
            + _LEAD_TAIL
            + rb"(?:[=:][ \t]{0,16}"
            + _SGR_OPEN
            + rb")?\Z",
        ),
        partial=(
            rb"(?i:" + _prefixes(_KEYWORDS) + rb")",
            rb"(?i:(?:" + _KEY_BEHIND + rb")ke?)",
        ),
    ),
)

_LABELS: Final = {name: kind.label for kind in _KINDS for name, _ in kind.full} | {
    f"{name}_open": kind.label for kind in _KINDS for name, _ in kind.full
}
_KNOWN: Final = "known"

# What the rest of a run is, once its marker went out: dropped while it lasts. A quoted value
# ends at its closing quote (the "done" group), which is dropped too.
_SWALLOW: Final = {
    "pem_cut_run": re.compile(_PEM_CHARS + rb"*"),
    "jwt_run": re.compile(_B64URL + rb"*"),
    "vault_run": re.compile(_B64URL + rb"*"),
    "dq_run": re.compile(rb"[^\"\r\n]*(?P<done>\")?"),
    "sq_run": re.compile(rb"[^'\r\n]*(?P<done>')?"),
    "bare_run": re.compile(rb"[^\s,;&\"'\x1b]*"),
}

_PARTIAL: Final = re.compile(b"(?:" + b"|".join(p for k in _KINDS for p in k.partial) + rb")\Z")

# The literal scans: (pattern, run on the lower-cased copy?, offsets from the hit to where
# a match may start).
_KEYWORD_AHEAD = rb"(?=(?:[_-][a-z0-9_-]{0,63})?[\"']?[ \t]{0,16}(?:[=:]|\Z))"
_SCANS: Final = (
    (re.compile(rb"-----BEGIN"), False, (0,)),
    # A rare last byte and a look-behind scan faster than the lead itself ("eyJ": 2.5 against
    # 1.0 GB/s here): the scan's speed is the frequency of its first byte.
    (re.compile(rb"J(?<=eyJ)"), False, (-2,)),
    (re.compile(rb"v(?<=hv)[sbr]\."), False, (-1,)),
    (re.compile(rb"A[KS]IA"), False, (0,)),
    (re.compile(rb"\.(?<=\b[sbr]\.)"), False, (-1,)),
    # A keyword counts only when what follows could still be an assignment ("token=",
    # "password\": ", or the end of the buffer): prose full of "token" and "key" then costs
    # no more than output without them. A look-ahead, so that nothing is consumed past it.
    (re.compile(rb"k(?:ey|en)" + _KEYWORD_AHEAD), True, (0, -2)),  # key, token
    # credential(s), secret, aws_secret_access_key
    (re.compile(rb"cre(?:t|dentials?)" + _KEYWORD_AHEAD), True, (0, -2, -6)),
    (re.compile(rb"p(?:ass(?:word|wd|phrase)?|wd)" + _KEYWORD_AHEAD), True, (0,)),
)


def _alternation(known: list[bytes], *, final: bool) -> re.Pattern[bytes]:
    parts: list[bytes] = []
    if known:
        parts.append(b"(?P<known>" + b"|".join(re.escape(s) for s in known) + b")")
    for kind in _KINDS:
        for i, (name, full) in enumerate(kind.full):
            parts.append(b"(?P<%s>%s)" % (name.encode(), full))
            if i == 0 and not final and kind.open:
                # Right after the first: a PEM block still waiting for its END line must not
                # be taken for one cut short.
                parts.append(b"(?P<%s_open>%s)" % (name.encode(), b"|".join(kind.open)))
    return re.compile(b"|".join(parts))


def final_pattern(secrets: Iterable[str | bytes] = ()) -> re.Pattern[bytes]:
    """The one pattern that defines what is redacted: what a single left-to-right pass of it
    over the whole stream would replace is what the streaming redactor replaces."""
    return _alternation(_known_forms(secrets), final=True)


def _known_forms(secrets: Iterable[str | bytes]) -> list[bytes]:
    forms: set[bytes] = set()
    for secret in secrets:
        raw = secret.encode() if isinstance(secret, str) else bytes(secret)
        if len(raw) < MIN_KNOWN_SECRET:
            continue
        forms.add(raw)
        forms.add(base64.b64encode(raw))
    # Longest first: where one secret starts another, the longer one is replaced whole.
    return sorted(forms, key=lambda s: (-len(s), s))


def marker(label: str) -> bytes:
    return b"[REDACTED:%s]" % label.encode()


# ----------------------------------------------------------------------------- the stream
class StreamRedactor:
    """Redacts one output stream; see the module docstring. Not thread-safe: one user."""

    def __init__(self, secrets: Iterable[str | bytes] = ()) -> None:
        self._secrets: list[str | bytes] = list(secrets)
        self._held = b""  # input not yet decided on
        self._context = b""  # up to CONTEXT input bytes just before _held
        self._swallow: re.Pattern[bytes] | None = None
        self.counts: Counter[str] = Counter()  # markers written, by label
        self._compile()

    def _compile(self) -> None:
        self._known = _known_forms(self._secrets)
        self._stream = _alternation(self._known, final=False)
        self._final = _alternation(self._known, final=True)
        # Prefixes of known secrets up to 7 bytes, for the end of the buffer; longer ones are
        # found by their first 8 bytes.
        self._known_heads = {s[:8] for s in self._known}
        self._known_short = {s[:i] for s in self._known for i in range(1, min(8, len(s)))}
        self._known_longest = max((len(s) for s in self._known), default=0)

    def add_secret(self, secret: str | bytes) -> None:
        """Redact this exact string from now on (and from anything still held)."""
        self._secrets.append(secret)
        self._compile()

    @property
    def held(self) -> int:
        """Input bytes held back, waiting for the bytes that decide them."""
        return len(self._held)

    def feed(self, chunk: bytes) -> bytes:
        """Redact the next chunk; returns what can be released now (maybe less than given)."""
        if not chunk:
            return b""
        return self._process(self._context + self._held + chunk, len(self._context), False)

    def flush(self) -> bytes:
        """The stream has ended: release everything held, redacted. The redactor can go on
        afterwards as for a new stream (the known secrets stay)."""
        out = self._process(self._context + self._held, len(self._context), True)
        self._context = b""
        self._swallow = None
        return out

    # ------------------------------------------------------------------ the work
    def _process(self, buf: bytes, start: int, final: bool) -> bytes:
        pos = start
        if self._swallow is not None:
            pos = self._drop_run(self._swallow, buf, pos)
            if self._swallow is not None:  # the run goes on to the end of what we have
                self._keep(buf, len(buf))
                return b""
        out, cut = self._redact(buf, start, pos, final)
        self._keep(buf, cut)
        return out

    def _redact(self, buf: bytes, start: int, pos: int, final: bool) -> tuple[bytes, int]:
        """Redact from ``pos``; returns the output and where the held part starts."""
        n = len(buf)
        out: list[bytes] = []
        emitted = pos  # buf[emitted:pos] is plain text not yet in out
        pattern = self._final if final else self._stream
        candidates = iter(self._candidates(buf, pos))
        ahead = None if final else _Ahead(buf, self._known_partials(buf, start))
        while True:
            m = _next_match(pattern, buf, candidates, pos)
            hold = None if ahead is None else ahead.first(pos)
            if hold is not None and (m is None or hold <= m.start()):
                out.append(buf[emitted:hold])
                return b"".join(out), hold
            if m is None:
                break
            name = m.lastgroup or ""
            if not final and (name.endswith("_open") or (m.end() == n and name.endswith("_edge"))):
                out.append(buf[emitted : m.start()])
                return b"".join(out), m.start()
            out += (buf[emitted : m.start()], self._replacement(m, name))
            pos = emitted = m.end()
            run = _run_kind(m, name)
            if run is not None and pos == n and not final:
                # The marker is out; the rest of the run is dropped as it arrives.
                self._swallow = _SWALLOW[run]
                break
        out.append(buf[emitted:])
        return b"".join(out), n

    def _keep(self, buf: bytes, cut: int) -> None:
        self._held = buf[cut:]
        self._context = buf[max(0, cut - CONTEXT) : cut]

    def _drop_run(self, swallow: re.Pattern[bytes], buf: bytes, pos: int) -> int:
        # Every swallow pattern matches the empty string, so there is always a match.
        end = pos
        if (m := swallow.match(buf, pos)) is not None:
            end = m.end()
            if "done" in swallow.groupindex and m.group("done"):
                self._swallow = None
        if end < len(buf):
            self._swallow = None
        return end

    def _replacement(self, m: re.Match[bytes], name: str) -> bytes:
        label = "session-secret" if name == _KNOWN else _LABELS[name]
        self.counts[label] += 1
        if name in ("assignment", "aws_secret"):
            # The name stays readable: "DB_PASSWORD=" then the marker.
            return m.group(f"{name}_lead") + marker(label)
        return marker(label)

    def _candidates(self, buf: bytes, start: int) -> list[int]:
        """Every position at or after ``start`` where a full or open alternative may match,
        except partly arrived leads in the last TAIL bytes (found by _PARTIAL)."""
        found: set[int] = set()
        lowered: bytes | None = None
        for scan, lower, offsets in _SCANS:
            if lower:
                if lowered is None:
                    lowered = buf.lower()
                text = lowered
            else:
                text = buf
            for hit in scan.finditer(text, max(0, start - 6)):
                for offset in offsets:
                    found.add(hit.start() + offset)
        for secret in self._known:
            at = buf.find(secret, start)
            while at >= 0:
                found.add(at)
                at = buf.find(secret, at + 1)
        return sorted(p for p in found if p >= start)

    def _known_partials(self, buf: bytes, start: int) -> list[int]:
        """Positions from which the rest of ``buf`` is a proper prefix of a known secret."""
        if not self._known:
            return []
        n = len(buf)
        lo = max(start, n - self._known_longest + 1)
        found: set[int] = set()
        for k in range(1, min(8, n - lo + 1)):
            if buf[n - k :] in self._known_short:
                found.add(n - k)
        for head in self._known_heads:
            at = buf.find(head, lo)
            while at >= 0:
                rest = buf[at:]
                if any(len(s) > len(rest) and s.startswith(rest) for s in self._known):
                    found.add(at)
                at = buf.find(head, at + 1)
        return sorted(found)


def _next_match(
    pattern: re.Pattern[bytes], buf: bytes, candidates: Iterator[int], pos: int
) -> re.Match[bytes] | None:
    for p in candidates:
        if p >= pos and (m := pattern.match(buf, p)) is not None:
            return m
    return None


class _Ahead:
    """The earliest position at or after a given one from which the rest of the buffer may
    be the start of a secret still arriving: a partly arrived lead or known secret."""

    def __init__(self, buf: bytes, known_partials: list[int]) -> None:
        self._buf = buf
        self._known = known_partials
        self._tail: int | None = None
        self._tail_from: int | None = None

    def first(self, pos: int) -> int | None:
        if self._tail_from is None or (self._tail is not None and self._tail < pos):
            found = _PARTIAL.search(self._buf, max(pos, len(self._buf) - TAIL))
            self._tail = found.start() if found else None
            self._tail_from = pos
        i = bisect.bisect_left(self._known, pos)
        known = self._known[i] if i < len(self._known) else None
        if known is None or (self._tail is not None and self._tail < known):
            return self._tail
        return known


def _run_groups(m: re.Match[bytes]) -> Iterator[str]:
    for name, index in m.re.groupindex.items():
        if m.start(index) >= 0 and name.endswith("_run"):
            yield name


def _run_kind(m: re.Match[bytes], name: str) -> str | None:
    """Which run a match ends with, if it ends with one that more bytes would extend."""
    if name in _SWALLOW:
        return name
    if name in ("assignment", "aws_secret"):
        for group in _run_groups(m):
            run = group.removeprefix(f"{name}_")
            text = m.group(group)
            quote = {"dq_run": b'"', "sq_run": b"'"}.get(run)
            if quote is not None and len(text) > 1 and text.endswith(quote):
                return None  # the closing quote is there: the value is complete
            return run
    return None
