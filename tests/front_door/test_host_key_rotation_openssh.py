"""Host key rotation as Debian's OpenSSH client sees it, against the real `bastion serve`
(supervisor and two workers): with ``UpdateHostKeys=yes`` a client that knows only the old
key learns the new one during the overlap; after ``--finish`` a client that knows only the
new key logs in, one that knows only the old key is refused, and the client that learned
both forgets the retired one."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from bastion.keys.host import next_path, read_host_key
from front_door.harness import BastionEnv, Operator, ServedBastion, make_env

pytestmark = pytest.mark.slow


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[BastionEnv, int]]:
    env = make_env(tmp_path, operators=20)
    bastion = ServedBastion(env, workers=2).start()
    try:
        yield env, bastion.port
    finally:
        assert bastion.stop() == 0


def keys_cli(env: BastionEnv, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", "keys", *args, "--config", str(env.config_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def openssh_login(port: int, op: Operator, known_hosts: Path, learn: str | None = None) -> bool:
    """Log in with OpenSSH checking the host key against ``known_hosts`` only; whether the
    client accepted the host key (a refused key ends it before the code is asked). With
    ``learn``, stay logged in until that key is in ``known_hosts`` (or a few seconds)."""
    argv = [
        "-F", "/dev/null", "-p", str(port), "-i", str(op.key_file),
        "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes", "-o", "UpdateHostKeys=yes", "-o", "CheckHostIP=no",
        f"{op.name}@127.0.0.1",
    ]  # fmt: skip
    child = pexpect.spawn("ssh", argv, encoding="utf-8", timeout=20, dimensions=(30, 100))
    try:
        seen = child.expect(
            ["Verification code: ", "Host key verification failed", "Permission denied"]
        )
        if seen > 0:  # the client refused the key, or the server a login over a retired one
            child.expect(pexpect.EOF)
            return False
        child.sendline(op.code())
        child.expect("Press Enter")
        deadline = time.monotonic() + 5
        while learn is not None and learn not in known_hosts.read_text():
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        child.sendline("")
        child.expect(pexpect.EOF)
        return True
    finally:
        child.close()


def test_openssh_learns_a_rotated_host_key_and_forgets_the_retired_one(
    served: tuple[BastionEnv, int], tmp_path: Path
) -> None:
    env, port = served
    host_key = env.state_dir / "host_ed25519"
    old = read_host_key(host_key)
    assert old is not None
    knows_old = tmp_path / "known_hosts"
    knows_old.write_text(f"[127.0.0.1]:{port} {old.public}\n")

    keys_cli(env, "rotate", "--kind", "host")
    new = read_host_key(next_path(host_key))
    assert new is not None
    blob = new.public.split()[1]
    # Each worker takes the new key up within a second; until then it announces the old
    # key alone, so log in (fresh operators: a code counts once) until the client learns.
    for _ in range(8):
        assert openssh_login(port, env.fresh(), knows_old, learn=blob)
        if blob in knows_old.read_text():
            break
    else:
        raise AssertionError("the OpenSSH client never learned the new host key")
    learned = knows_old.read_text()
    assert old.public.split()[1] in learned  # during the overlap: both keys

    keys_cli(env, "rotate", "--kind", "host", "--finish")
    knows_new = tmp_path / "known_hosts.new"
    knows_new.write_text(f"[127.0.0.1]:{port} {new.public}\n")
    # A worker may serve the old key for up to a second more: a refused key is retried.
    for _ in range(8):
        if openssh_login(port, env.fresh(), knows_new):
            break
        time.sleep(0.5)
    else:
        raise AssertionError("a client that knows only the new host key could not log in")
    knows_only_old = tmp_path / "known_hosts.old"
    knows_only_old.write_text(f"[127.0.0.1]:{port} {old.public}\n")
    # Whichever worker it reaches: a worker serves the new key, or (for a moment after the
    # finish) refuses any login over the old one.
    refused = [openssh_login(port, env.fresh(), knows_only_old) for _ in range(3)]
    assert refused == [False, False, False]

    # The client that learned both keys drops the retired one at its next login.
    assert openssh_login(port, env.fresh(), knows_old)
    remaining = knows_old.read_text()
    assert blob in remaining
    assert old.public.split()[1] not in remaining
