"""A debug shell whose recording process dies: the session ends (fail closed), the operator
is told in one sentence, the audit log has the alert, and the next shell is recorded by a
new recording process."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from front_door.harness import BastionEnv
from front_door.test_login_asyncssh import fresh_login

from bastion.recording.recorder import recording_process
from bastion.ssh.worker import Worker
from devstack.test_debug_shell import served, shell_ready, stack

__all__ = ["served", "stack"]  # the fixtures, shared with the debug shell's own tests


async def test_a_recording_process_that_dies_ends_the_shell_and_the_operator_is_told(
    served: tuple[BastionEnv, Worker], stack: dict[str, Any]
) -> None:
    env, worker = served
    recorder = await recording_process(env.recordings_dir)  # the worker's, started with it
    assert recorder.pid is not None
    _, conn = await fresh_login(env, worker.port)
    async with conn:
        process = await conn.create_process(
            "debug payments/api-1", term_type="xterm", term_size=(100, 30)
        )
        await shell_ready(process)
        os.kill(recorder.pid, signal.SIGKILL)
        told = await asyncio.wait_for(process.stdout.read(), 30)  # to the end of the channel
        await asyncio.wait_for(process.wait_closed(), 30)
    assert told.endswith("bastion: the session could not be recorded and has ended\r\n")
    failed = await env.event("session.recording_failed")
    attached = await env.event("session.state", session=failed["session"], outcome="attached")
    assert failed["outcome"] == "alert"
    assert failed["recording"] == attached["recording"]
    assert failed["complete"] is False
    assert failed["error"].startswith("the recording process stopped")
    wiping = await env.event("session.state", session=failed["session"], outcome="wiping")
    assert wiping["ending"] == "error"
    wiped = await env.event("session.wiped", session=failed["session"])
    outcomes = {r["kind"]: r["outcome"] for r in wiped["resources"]}
    assert outcomes["lease"] == "revoked"
    assert outcomes["debug_container"].startswith("terminated")
    # The next shell gets a new recording process, and its recording is complete.
    _, conn = await fresh_login(env, worker.port)
    async with conn:
        process = await conn.create_process(
            "debug payments/api-1", term_type="xterm", term_size=(100, 30)
        )
        await shell_ready(process)
        process.stdin.write("exit 0\n")
        await process.wait_closed()
    ended = await env.event("session.debug_ended")
    assert ended["recording_complete"] is True
    assert (await recording_process(env.recordings_dir)).pid != recorder.pid
