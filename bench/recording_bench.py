#!/usr/bin/env python3
"""Recording throughput: redaction, encoding and sealing of terminal output, in MB/s.

What is measured, in one run, on the same bytes: mixed terminal output (JSON log lines,
``ls -l``, ``top``-like rows with colour escapes, base64 blocks, YAML, prose; a planted
secret of each kind about every 64 KiB; generated with a fixed seed) cut into the attach
bridge's 32 KiB chunks.

* **baselines**: ``bytes.lower`` of each chunk (one pass over memory at C speed) and a plain
  ``os.write`` of each chunk to a file plus one ``fsync`` at the end;
* **redactor**: ``StreamRedactor.feed`` per chunk, without and with four known secrets
  (``--mb``, 200 MB by default);
* **encode**: redacted chunks to asciicast v2 lines (incremental UTF-8 decoding + orjson);
* **seal + write**: those lines sealed in segments (AES-256-GCM, SHA-256 chain, an Ed25519
  signature each) and appended to a file, one fsync a second;
* **recorder**: the whole path as the recording process drives it,
  ``RecordingWriter.append`` per chunk and ``flush`` every 256 KiB (what it does at that
  rate), then ``close``;
  the file is then verified and decrypted, and the run fails (exit 1) if a planted secret
  is in it or the output differs from the redactor's;
* **append**: ``RecordingWriter.append`` alone, per call, for 32 KiB and for 1-byte chunks
  (the worker's own share, a ``sendmsg`` per chunk to its recording process, is in
  ``bench/README.md``, "Since: the recorder in its own process").

"vs write" compares MB/s with the plain write of the same bytes. File rows write
``--file-mb`` (64 MB by default) into a temporary directory (``--dir``), removed at the end.

Run from the repository root::

    .venv/bin/python bench/recording_bench.py            # ~1 minute
    .venv/bin/python bench/recording_bench.py --quick    # ~10 s
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cryptography
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from bastion.recording.asciicast import CastEncoder, CastHeader
from bastion.recording.key_files import load_or_create_signing_key
from bastion.recording.playback import split_lines
from bastion.recording.redaction import StreamRedactor
from bastion.recording.sealed import SealedReader, Sealer
from bastion.recording.writer import RecordingFile, RecordingWriter

CHUNK = 32 * 1024
FLUSH = 256 * 1024
AUDITOR = X25519PrivateKey.generate()
KNOWN = [
    "kubernetes/creds/debug/AbCdEfGh0123456789",
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVidWc6YmFzdGlvbiJ9.c2ln",
    "db-password-Zq8wX2",
    "s3cr3t-api-token-value-42",
]
PLANTED = [
    "DB_PASSWORD=hunter2-planted",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwbGFudGVkIn0.cGxhbnRlZC1zaWduYXR1cmU",
    "hvs.CAESIPlantedVaultTokenValue000",
    "AKIAPLANTEDKEY000000",
    "-----BEGIN PRIVATE KEY-----\r\nUGxhbnRlZFByaXZhdGVLZXlCb2R5\r\n-----END PRIVATE KEY-----",
    KNOWN[2],
]
SECRET_PARTS = [
    b"hunter2-planted",
    b"cGxhbnRlZC1zaWduYXR1cmU",
    b"PlantedVaultTokenValue",
    b"AKIAPLANTEDKEY000000",
    b"UGxhbnRlZFByaXZhdGVLZXlCb2R5",
    KNOWN[2].encode(),
]
# Log vocabulary, the keywords of assignments included (as prose, they cost nothing).
WORDS = [
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
    "on", "not", "this", "are", "or", "from", "at", "which", "request", "server", "pod",
    "container", "started", "ready", "failed", "retry", "connection", "timeout", "latency",
    "user", "cache", "token", "key", "password", "secret",
]  # fmt: skip


def mixed_output(size: int, seed: int = 7) -> bytes:
    """Terminal output of about ``size`` bytes: the same for the same seed."""
    rnd = random.Random(seed)
    out: list[bytes] = []
    total = 0
    next_secret = 0
    while total < size:
        k = rnd.random()
        if total >= next_secret:
            line = "export " + rnd.choice(PLANTED)
            next_secret += 64 * 1024
        elif k < 0.3:
            line = json.dumps(
                {
                    "ts": f"2026-11-28T10:{rnd.randint(0, 59):02d}:{rnd.randint(0, 59):02d}Z",
                    "level": rnd.choice(["info", "debug", "warn"]),
                    "msg": " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(3, 12))),
                    "path": f"/api/v1/items/{rnd.randint(1, 99999)}",
                    "status": 200,
                    "duration_ms": round(rnd.random() * 100, 3),
                }
            )
        elif k < 0.45:
            line = (
                f"-rw-r--r-- 1 app app {rnd.randint(10, 999999):>8} Nov 28 10:"
                f"{rnd.randint(0, 59):02d} {rnd.choice(WORDS)}_{rnd.randint(1, 99)}.log"
            )
        elif k < 0.6:
            line = (
                f"\x1b[1;{rnd.randint(30, 37)}m{rnd.randint(1, 9999):>5}\x1b[0m app   20   0 "
                f"{rnd.randint(100, 9999)}m {rnd.randint(10, 999)}m S  {rnd.random() * 10:4.1f} "
                f"\x1b[32m{rnd.choice(WORDS)}\x1b[0m"
            )
        elif k < 0.7:
            line = base64.b64encode(rnd.randbytes(57)).decode()
        elif k < 0.85:
            key = rnd.choice(["name", "image", "replicas", "port", "path", "value", "mountPath"])
            line = f"  {key}: {rnd.choice(WORDS)}-{rnd.randint(1, 99)}"
        else:
            line = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(5, 16))) + " é."
        data = line.encode() + b"\r\n"
        out.append(data)
        total += len(data)
    return b"".join(out)[:size]


def chunks_of(data: bytes, repeat: int) -> Iterator[bytes]:
    for _ in range(repeat):
        for i in range(0, len(data), CHUNK):
            yield data[i : i + CHUNK]


@dataclass
class Row:
    name: str
    megabytes: float
    seconds: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.megabytes / self.seconds if self.seconds else 0.0


def timed(name: str, total: int, work: Callable[[], object], note: str = "") -> Row:
    start = time.perf_counter()
    work()
    return Row(name, total / 1e6, time.perf_counter() - start, note)


# ---------------------------------------------------------------------- the stages
def plain_write(directory: Path, corpus: bytes, repeat: int) -> None:
    fd = os.open(directory / "plain.out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in chunks_of(corpus, repeat):
            os.write(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)


def lower_all(corpus: bytes, repeat: int) -> None:
    for chunk in chunks_of(corpus, repeat):
        chunk.lower()


def redact(corpus: bytes, repeat: int, secrets: list[str]) -> bytes:
    redactor = StreamRedactor(secrets)
    out = io.BytesIO()
    for chunk in chunks_of(corpus, repeat):
        out.write(redactor.feed(chunk))
    out.write(redactor.flush())
    return out.getvalue()


def encode(corpus: bytes, repeat: int) -> list[bytes]:
    redactor = StreamRedactor(KNOWN)
    cast = CastEncoder()
    lines = [
        cast.output(i * 0.001, redactor.feed(chunk))
        for i, chunk in enumerate(chunks_of(corpus, repeat))
    ]
    lines.append(cast.output(9.0, redactor.flush()))
    return lines


def new_file(directory: Path, name: str) -> tuple[RecordingFile, Path]:
    sealer = Sealer(
        recording_id=name,
        session_id="bench",
        created="2026-11-28T10:00:00Z",
        auditor_key=AUDITOR.public_key(),
        signing_key=load_or_create_signing_key(directory / "state"),
    )
    path = directory / f"{name}.rec"
    return RecordingFile.create(path, sealer, fsync_interval=1.0), path


def seal_and_write(directory: Path, lines: list[bytes]) -> None:
    file, _ = new_file(directory, "seal")
    batch: list[bytes] = []
    size = 0
    for line in lines:
        batch.append(line)
        size += len(line)
        if size >= FLUSH:
            file.write(b"".join(batch))
            batch, size = [], 0
    file.write(b"".join(batch), final=True)
    file.close()


def whole_recorder(directory: Path, corpus: bytes, repeat: int) -> Path:
    file, path = new_file(directory, "recorder")
    header = CastHeader(width=120, height=40, timestamp=0, title="bench")
    recorder = RecordingWriter(file, header, secrets=KNOWN)
    for chunk in chunks_of(corpus, repeat):
        recorder.append(chunk)
        if recorder.backlog >= FLUSH:
            recorder.flush()
    recorder.close()
    return path


def append_cost(directory: Path, size: int, calls: int) -> float:
    """Nanoseconds per append() call of ``size`` bytes (no flush: the hot path alone)."""
    file, _ = new_file(directory, f"append-{size}")
    recorder = RecordingWriter(file, CastHeader(80, 24, 0, "b"))
    chunk = b"x" * size
    start = time.perf_counter()
    for _ in range(calls):
        recorder.append(chunk)
    seconds = time.perf_counter() - start
    file.close()
    return seconds / calls * 1e9


def check(path: Path, expected: bytes) -> list[str]:
    """Verify, decrypt and compare a recording with what the redactor alone gave."""
    problems: list[str] = []
    with path.open("rb") as f:
        reader = SealedReader(f, str(path))
        text = io.StringIO()
        lines = split_lines(reader.plaintext(AUDITOR))
        next(lines)  # the header
        for line in lines:
            event = json.loads(line)
            if event[1] == "o":
                text.write(event[2])
    if reader.verdict is None or not reader.verdict.complete:
        problems.append("the recorder's file does not verify as complete")
    got = text.getvalue().encode()
    leaked = [p for p in SECRET_PARTS if p in got]
    problems += [f"a planted secret is in the recording: {p[:9]!r}" for p in leaked]
    if got != expected.decode("utf-8", errors="replace").encode():
        problems.append("the recording's output differs from the redactor's")
    return problems


# ---------------------------------------------------------------------- main
def table(rows: list[Row], baseline: Row) -> str:
    out = [f"{'stage':44} {'MB':>7} {'seconds':>8} {'MB/s':>8} {'vs write':>9}"]
    for row in rows:
        ratio = row.rate / baseline.rate if baseline.rate else 0.0
        out.append(
            f"{row.name:44} {row.megabytes:7.0f} {row.seconds:8.2f} {row.rate:8.1f} "
            f"{ratio:8.3f}x" + (f"  {row.note}" if row.note else "")
        )
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="MB through the redactor")
    parser.add_argument("--file-mb", type=int, default=64, help="MB written to files")
    parser.add_argument("--dir", type=Path, help="where to write (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="20 MB and 16 MB")
    args = parser.parse_args()
    if args.quick:
        args.mb, args.file_mb = 20, 16
    corpus = mixed_output(8 * 1000 * 1000)
    repeat = max(1, args.mb * 1000 * 1000 // len(corpus))
    file_repeat = max(1, args.file_mb * 1000 * 1000 // len(corpus))
    total, file_total = len(corpus) * repeat, len(corpus) * file_repeat
    print(
        f"# Python {platform.python_version()}, cryptography {cryptography.__version__}, "
        f"{os.cpu_count()} CPUs; {CHUNK // 1024} KiB chunks; corpus {len(corpus) / 1e6:.0f} MB "
        f"x {repeat} (redactor) / x {file_repeat} (files)"
    )
    problems: list[str] = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="recording-bench-") as tmp:
        directory = Path(tmp)
        rows = [
            timed("baseline: bytes.lower per chunk", total, lambda: lower_all(corpus, repeat)),
            timed(
                "baseline: os.write per chunk + fsync",
                file_total,
                lambda: plain_write(directory, corpus, file_repeat),
            ),
        ]
        write = rows[1]
        (directory / "plain.out").unlink()
        redacted: list[bytes] = []
        rows.append(timed("redactor", total, lambda: redact(corpus, repeat, [])))
        rows.append(
            timed(
                "redactor, 4 known secrets",
                total,
                lambda: redacted.append(redact(corpus, repeat, KNOWN)),
            )
        )
        lines: list[list[bytes]] = []
        rows.append(
            timed(
                "redact + encode asciicast",
                file_total,
                lambda: lines.append(encode(corpus, file_repeat)),
            )
        )
        encoded = sum(len(line) for line in lines[0])
        rows.append(
            timed(
                "seal + write (of the encoded lines)",
                encoded,
                lambda: seal_and_write(directory, lines[0]),
                f"{encoded / file_total:.2f} bytes encoded per byte of output",
            )
        )
        paths: list[Path] = []
        rows.append(
            timed(
                "recorder: append + flush + close",
                file_total,
                lambda: paths.append(whole_recorder(directory, corpus, file_repeat)),
            )
        )
        rows[
            -1
        ].note = f"{paths[0].stat().st_size / file_total:.2f} bytes on disk per byte of output"
        problems += check(paths[0], redact(corpus, file_repeat, KNOWN))
        planted = sum(redacted[0].count(p) for p in SECRET_PARTS)
        if planted:
            problems.append(f"{planted} planted secrets survived the redactor")
        big = append_cost(directory, CHUNK, 20_000)
        small = append_cost(directory, 1, 200_000)
    print(table(rows, write))
    print(f"append() per call: {big:.0f} ns ({CHUNK // 1024} KiB chunks), {small:.0f} ns (1 byte)")
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
