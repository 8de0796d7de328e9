"""Pods as real processes: ephemeral containers, attach, exec, graceful deletion.

Each container runs as a local process (the image reference maps to a command through the
fixture's ``images``), in a per-pod sandbox directory under kubesim's workdir. Containers of
seeded pods start lazily, on the first attach or exec; containers of pods created through the
API and every ephemeral container start at once, and their status moves Waiting → Running →
Terminated in the stored pod (so watchers see it) as the process runs and exits.

``pods/ephemeralcontainers`` follows the API server: only ``spec.ephemeralContainers`` is
taken from the submitted object (other changes are dropped, as its update strategy does),
existing ephemeral containers are immutable, names are unique across all containers, and
only the allowed fields may be set.

With ``stdinOnce``, the first attach that closes stdin (or drops) closes the container's
stdin for good; for a TTY that is a hangup, so an interactive shell ends, as it would in a
cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bastion.devstack.kubesim.errors import ApiError
from bastion.devstack.kubesim.fixture import Fixture
from bastion.devstack.kubesim.patch import apply_patch
from bastion.devstack.kubesim.processes import ContainerProcess
from bastion.devstack.kubesim.store import RESOURCES, Store, now_rfc3339
from bastion.devstack.kubesim.streaming import serve_stream
from bastion.devstack.kubesim.validation import validate_ephemeral_update

if TYPE_CHECKING:
    from bastion.devstack.kubesim.rbac import UserInfo
    from bastion.devstack.kubesim.server import ApiServer, RequestInfo

__all__ = ["PodRuntime"]

Obj = dict[str, Any]
Key = tuple[str, str, str]  # namespace, pod, container
POD = RESOURCES[("", "pods")]
_TRUE = ("true", "1", "True")


def _timestamp() -> str:
    return now_rfc3339()


class PodRuntime:
    def __init__(self, store: Store, fixture: Fixture, workdir: Path) -> None:
        self.store = store
        self.fixture = fixture
        self.workdir = workdir
        self.processes: dict[Key, ContainerProcess] = {}
        self._shell_dirs: dict[str, Path] = {}  # an image's shell -> a PATH dir with its `sh`
        self._stdin_closed: set[Key] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def install(self, api: ApiServer) -> None:
        api.pod_handlers.update(
            {
                "ephemeralcontainers": self._ephemeral_containers,
                "attach": self._attach,
                "exec": self._exec,
                "log": self._log,
            }
        )
        api.on_pod_created = self._pod_created
        api.on_pod_deleting = self._pod_deleting
        self.api = api

    # ------------------------------------------------------------------ processes
    def _sandbox(self, namespace: str, pod: str) -> Path:
        path = self.workdir / namespace / pod
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def _argv(self, container: Obj) -> list[str]:
        if container.get("command"):
            return [str(p) for p in container["command"]] + [
                str(p) for p in container.get("args") or []
            ]
        image = self.fixture.images.get(container.get("image", ""), self.fixture.default_image)
        return [*image.command, *(str(p) for p in container.get("args") or [])]

    def _env(self, pod: Obj, container: Obj, sandbox: Path, tty: bool) -> dict[str, str]:
        image = self.fixture.images.get(container.get("image", ""), self.fixture.default_image)
        path = "/usr/local/bin:/usr/bin:/bin"
        if image.shell is not None:
            path = f"{self._shell_dir(image.shell)}:{path}"
        env = {
            "PATH": path,
            "HOME": str(sandbox),
            "HOSTNAME": pod["metadata"]["name"],
            "LANG": "C.UTF-8",
        }
        if tty:
            env["TERM"] = "xterm-256color"
        for item in container.get("env") or []:
            # Only literal values: secret and config-map references have no store here.
            if isinstance(item, dict) and "value" in item and item.get("name"):
                env[str(item["name"])] = str(item["value"])
        return env

    def _shell_dir(self, shell: str) -> Path:
        """A directory whose ``sh`` is ``shell``: the image's shell, first on PATH. World-
        readable, since a container's process may run as another uid (runAsUser)."""
        found = self._shell_dirs.get(shell)
        if found is None:
            program = shutil.which(shell)
            if program is None:
                raise FileNotFoundError(
                    f"kubesim: the fixture's image shell {shell!r} is not installed"
                )
            found = Path(tempfile.mkdtemp(prefix="kubesim-shell-"))
            found.chmod(0o755)
            (found / "sh").symlink_to(program)
            self._shell_dirs[shell] = found
        return found

    def _process(
        self, argv: list[str], namespace: str, pod: Obj, container: Obj, *, tty: bool, stdin: bool
    ) -> ContainerProcess:
        """A container's (or an exec's) process, not started: in the pod's sandbox, with the
        container's env, as the user its security context names."""
        # workingDir names a path inside the image; the sandbox stands in for the image.
        sandbox = self._sandbox(namespace, pod["metadata"]["name"])
        env = self._env(pod, container, sandbox, tty)
        run_as = _run_as(pod, container)
        if run_as is not None:
            # Another user cannot enter kubesim's own directories: it starts at the root, as
            # a container whose image has no home for its uid does.
            sandbox = Path("/")
            env["HOME"] = "/"
        return ContainerProcess(argv, cwd=sandbox, env=env, tty=tty, stdin=stdin, run_as=run_as)

    async def _start(
        self, namespace: str, pod: Obj, container: Obj, section: str
    ) -> ContainerProcess:
        name = pod["metadata"]["name"]
        key = (namespace, name, container["name"])
        process = self._process(
            self._argv(container),
            namespace,
            pod,
            container,
            tty=bool(container.get("tty")),
            stdin=bool(container.get("stdin")),
        )
        self.processes[key] = process
        try:
            await process.start()
        except OSError as exc:
            self._set_state(
                key, section, {"waiting": {"reason": "CreateContainerError", "message": str(exc)}}
            )
            raise
        self._set_state(key, section, {"running": {"startedAt": _timestamp()}})
        self._spawn(self._reap(key, process, section))
        return process

    async def _reap(self, key: Key, process: ContainerProcess, section: str) -> None:
        await process.wait()
        # Kubernetes reports a death by signal N as 128 + N (137 for SIGKILL), not -N.
        code = process.exit_code
        started = _started_at(self._status_of(key, section))
        self._set_state(
            key,
            section,
            {
                "terminated": {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": started or _timestamp(),
                    "finishedAt": _timestamp(),
                    "containerID": f"kubesim://{process.pid}",
                }
            },
        )

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _status_of(self, key: Key, section: str) -> Obj | None:
        namespace, pod_name, container = key
        if not self.store.exists(POD, namespace, pod_name):
            return None
        pod = self.store.get(POD, namespace, pod_name)
        for status in pod.get("status", {}).get(section) or []:
            if status.get("name") == container:
                found: Obj = status
                return found
        return None

    def _set_state(self, key: Key, section: str, state: Obj) -> None:
        """Record a container's new state in the stored pod (a MODIFIED event)."""
        namespace, pod_name, container = key
        if not self.store.exists(POD, namespace, pod_name):
            return
        pod = copy.deepcopy(self.store.get(POD, namespace, pod_name))
        status = pod.setdefault("status", {})
        entries: list[Obj] = status.setdefault(section, [])
        spec_key = (
            "ephemeralContainers" if section == "ephemeralContainerStatuses" else ("containers")
        )
        image = next(
            (c.get("image", "") for c in pod["spec"].get(spec_key) or [] if c["name"] == container),
            "",
        )
        entry = next((e for e in entries if e.get("name") == container), None)
        if entry is None:
            entry = {
                "name": container,
                "image": image,
                "imageID": "",
                "ready": False,
                "restartCount": 0,
            }
            entries.append(entry)
        if "running" in state:
            entry["containerID"] = f"kubesim://{namespace}-{pod_name}-{container}"
            entry["started"] = True
            entry["ready"] = section == "containerStatuses"
        if "terminated" in state:
            entry["ready"] = False
            entry["started"] = False
        entry["state"] = state
        if section == "containerStatuses":
            _update_phase(pod)
        pod["metadata"].pop("resourceVersion", None)
        self.store.update(POD, namespace, pod_name, pod)

    # ------------------------------------------------------------------ pod lifecycle
    def _pod_created(self, pod: Obj) -> None:
        namespace = pod["metadata"]["namespace"]
        status = pod.setdefault("status", {})
        status["containerStatuses"] = [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "started": False,
                "state": {"waiting": {"reason": "ContainerCreating"}},
            }
            for c in pod["spec"]["containers"]
        ]
        status["startTime"] = _timestamp()
        status["hostIP"] = "10.0.0.1"
        status["podIP"] = "10.244.0.10"
        pod["spec"].setdefault("nodeName", "node-1")

        async def run_all() -> None:
            current = self.store.get(POD, namespace, pod["metadata"]["name"])
            for container in current["spec"]["containers"]:
                with contextlib.suppress(OSError):
                    await self._start(namespace, current, container, "containerStatuses")

        self._spawn(run_all())

    async def _pod_deleting(self, pod: Obj, grace: int) -> None:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        keys = [k for k in self.processes if k[0] == namespace and k[1] == name]
        await asyncio.gather(
            *(self.processes[k].stop(float(min(grace, 30))) for k in keys), return_exceptions=True
        )
        for key in keys:
            self.processes.pop(key, None)
            self._stdin_closed.discard(key)
        shutil.rmtree(self.workdir / namespace / name, ignore_errors=True)

    async def stop_all(self) -> None:
        await asyncio.gather(
            *(p.stop(1.0) for p in self.processes.values()), return_exceptions=True
        )
        self.processes.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for directory in self._shell_dirs.values():
            shutil.rmtree(directory, ignore_errors=True)
        self._shell_dirs.clear()

    # ------------------------------------------------------------------ ephemeral containers
    async def _ephemeral_containers(
        self, request: web.Request, user: UserInfo, info: RequestInfo
    ) -> web.StreamResponse:
        current = self.store.get(POD, info.namespace, info.name)
        if info.verb == "get":
            return web.Response(
                body=self.store.get_raw(POD, info.namespace, info.name),
                content_type="application/json",
            )
        body = await self.api.read_body(request)
        if info.verb == "patch":
            submitted = apply_patch(current, request.content_type, body)
        elif info.verb == "update":
            if not isinstance(body, dict) or body.get("kind") not in (None, "Pod"):
                raise ApiError(400, "expected a Pod object in the request body")
            submitted = body
        else:
            raise ApiError(
                405,
                "the server does not allow this method on the requested resource",
                reason="MethodNotAllowed",
            )
        if "deletionTimestamp" in current["metadata"]:
            raise ApiError.invalid(
                "Pod",
                info.name,
                [
                    (
                        "metadata.deletionTimestamp",
                        "FieldValueForbidden",
                        "Forbidden: pod is being deleted",
                    )
                ],
            )
        wanted = submitted.get("metadata", {}).get("resourceVersion")
        if info.verb == "update" and wanted and wanted != current["metadata"]["resourceVersion"]:
            raise ApiError.conflict(
                "",
                "pods",
                info.name,
                "the object has been modified; please "
                "apply your changes to the latest version and try again",
            )
        # The subresource's update strategy keeps everything but the ephemeral containers.
        updated = copy.deepcopy(current)
        updated["spec"]["ephemeralContainers"] = copy.deepcopy(
            (submitted.get("spec") or {}).get("ephemeralContainers") or []
        )
        # Defaults first, as the API server does: a client that sends an existing container
        # back without them has not changed it.
        for container in updated["spec"]["ephemeralContainers"]:
            if isinstance(container, dict):
                container.setdefault("terminationMessagePath", "/dev/termination-log")
                container.setdefault("terminationMessagePolicy", "File")
                container.setdefault("imagePullPolicy", "IfNotPresent")
        causes = validate_ephemeral_update(current, updated)
        if causes:
            raise ApiError.invalid("Pod", info.name, causes)
        old_names = {c["name"] for c in current["spec"].get("ephemeralContainers") or []}
        added = [c for c in updated["spec"]["ephemeralContainers"] if c["name"] not in old_names]
        statuses = updated.setdefault("status", {}).setdefault("ephemeralContainerStatuses", [])
        for container in added:
            statuses.append(
                {
                    "name": container["name"],
                    "image": container["image"],
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"waiting": {"reason": "ContainerCreating"}},
                }
            )
        updated["metadata"].pop("resourceVersion", None)
        self.store.update(POD, info.namespace, info.name, updated)
        response = self.store.get_raw(POD, info.namespace, info.name)
        for container in added:
            self._spawn(self._start_ephemeral(info.namespace, info.name, container))
        return web.Response(body=response, content_type="application/json")

    async def _start_ephemeral(self, namespace: str, pod_name: str, container: Obj) -> None:
        if not self.store.exists(POD, namespace, pod_name):
            return
        pod = self.store.get(POD, namespace, pod_name)
        with contextlib.suppress(OSError):
            await self._start(namespace, pod, container, "ephemeralContainerStatuses")

    # ------------------------------------------------------------------ attach and exec
    def _container(self, pod: Obj, requested: str) -> tuple[Obj, str]:
        spec = pod["spec"]
        regular = spec.get("containers") or []
        if not requested:
            if len(regular) != 1:
                names = " ".join(c["name"] for c in regular)
                raise ApiError(
                    400,
                    f"a container name must be specified for pod {pod['metadata']['name']}, "
                    f"choose one of: [{names}]",
                )
            return regular[0], "containerStatuses"
        for section, key in (
            ("containerStatuses", "containers"),
            ("initContainerStatuses", "initContainers"),
            ("ephemeralContainerStatuses", "ephemeralContainers"),
        ):
            for container in spec.get(key) or []:
                if container["name"] == requested:
                    return container, section
        raise ApiError(
            400,
            f"container {requested} is not valid for pod {pod['metadata']['name']}",
        )

    async def _running_process(
        self, namespace: str, pod: Obj, container: Obj, section: str
    ) -> ContainerProcess:
        key = (namespace, pod["metadata"]["name"], container["name"])
        process = self.processes.get(key)
        if process is not None and process.returncode is None:
            return process
        status = self._status_of(key, section) or {}
        state = status.get("state") or {}
        if "terminated" in state or (process is not None and process.returncode is not None):
            raise ApiError(400, f"container {container['name']} is terminated")
        if section == "ephemeralContainerStatuses":
            # Still being created: wait briefly, as the kubelet's attach does.
            for _ in range(50):
                await asyncio.sleep(0.02)
                process = self.processes.get(key)
                if process is not None:
                    return process
            raise ApiError(400, f"container {container['name']} is waiting to start")
        if pod.get("status", {}).get("phase") != "Running":
            raise ApiError(
                400,
                f"pod {pod['metadata']['name']} is not running: phase "
                f"{pod.get('status', {}).get('phase')}",
            )
        return await self._start(namespace, pod, container, section)

    async def _attach(
        self, request: web.Request, user: UserInfo, info: RequestInfo
    ) -> web.StreamResponse:
        pod = self.store.get(POD, info.namespace, info.name)
        container, section = self._container(pod, request.query.get("container", ""))
        stdin = request.query.get("stdin") in _TRUE
        tty = request.query.get("tty") in _TRUE
        if stdin and not container.get("stdin"):
            raise ApiError(
                400,
                f"container {container['name']} does not accept stdin: set stdin: true in its spec",
            )
        process = await self._running_process(info.namespace, pod, container, section)
        key = (info.namespace, info.name, container["name"])

        def stdin_closed() -> None:
            if container.get("stdinOnce") and key not in self._stdin_closed:
                self._stdin_closed.add(key)
                process.close_stdin()

        return await serve_stream(
            request,
            process,
            stdin=stdin and key not in self._stdin_closed,
            stdout=request.query.get("stdout", "true") in _TRUE,
            stderr=request.query.get("stderr") in _TRUE and not tty,
            tty=tty and bool(container.get("tty")),
            on_stdin_closed=stdin_closed if stdin else None,
            # Attaching never owns the container: a viewer leaving must not stop it.
            report_exit=False,
            owns_process=False,
        )

    async def _exec(
        self, request: web.Request, user: UserInfo, info: RequestInfo
    ) -> web.StreamResponse:
        pod = self.store.get(POD, info.namespace, info.name)
        container, section = self._container(pod, request.query.get("container", ""))
        command = request.query.getall("command", [])
        if not command:
            raise ApiError(400, "you must specify at least 1 command")
        await self._running_process(info.namespace, pod, container, section)
        command = await self._in_target_namespace(info.namespace, pod, container, command)
        tty = request.query.get("tty") in _TRUE
        stdin = request.query.get("stdin") in _TRUE
        # An exec runs as its container does.
        process = self._process(list(command), info.namespace, pod, container, tty=tty, stdin=stdin)
        # Handed over unstarted: the stream subscribes first, so no early output is lost,
        # and it reports a failed start on the error channel as the kubelet does.
        return await serve_stream(
            request,
            process,
            stdin=stdin,
            stdout=request.query.get("stdout", "true") in _TRUE,
            stderr=request.query.get("stderr") in _TRUE and not tty,
            tty=tty,
            owns_process=True,
        )

    async def _in_target_namespace(
        self, namespace: str, pod: Obj, container: Obj, command: list[str]
    ) -> list[str]:
        """An ephemeral container with a target shares its process namespace, in which the
        target's entrypoint is PID 1. kubesim has no PID namespaces: for such a container,
        an argument naming ``/proc/1`` names the target's real process instead, which is
        all the bastion's files view relies on (its ``/proc/1/root``)."""
        target = container.get("targetContainerName")
        if not target or not any(_names_pid_1(part) for part in command):
            return command
        for candidate in pod["spec"].get("containers") or []:
            if candidate["name"] == target:
                process = await self._running_process(
                    namespace, pod, candidate, "containerStatuses"
                )
                pid = str(process.pid)
                return [
                    "/proc/" + pid + part[len("/proc/1") :] if _names_pid_1(part) else part
                    for part in command
                ]
        return command

    async def _log(
        self, request: web.Request, user: UserInfo, info: RequestInfo
    ) -> web.StreamResponse:
        """``pods/{name}/log``: the container's recent output as text, with ``tailLines`` and
        ``limitBytes`` (no ``follow``, ``previous``, ``sinceSeconds`` or timestamps)."""
        pod = self.store.get(POD, info.namespace, info.name)
        container, section = self._container(pod, request.query.get("container", ""))
        key = (info.namespace, info.name, container["name"])
        process = self.processes.get(key)
        if process is None:
            # A seeded container becomes a process when first used, and its log with it.
            process = await self._running_process(info.namespace, pod, container, section)
        text = process.recent_output()
        tail = request.query.get("tailLines", "")
        if tail.isdigit():
            lines = text.splitlines(keepends=True)
            text = b"".join(lines[-int(tail) :]) if int(tail) else b""
        limit = request.query.get("limitBytes", "")
        if limit.isdigit() and int(limit) > 0:
            text = text[: int(limit)]
        return web.Response(body=text, content_type="text/plain", charset="utf-8")


def _names_pid_1(part: str) -> bool:
    return part == "/proc/1" or part.startswith("/proc/1/")


def _started_at(status: Obj | None) -> str | None:
    if not status:
        return None
    state = status.get("state") or {}
    running = state.get("running") or {}
    value = running.get("startedAt")
    return str(value) if value else None


def _update_phase(pod: Obj) -> None:
    states = [s.get("state") or {} for s in pod["status"].get("containerStatuses") or []]
    if states and all("running" in s for s in states):
        pod["status"]["phase"] = "Running"
        ready = "True"
    elif states and all("terminated" in s for s in states):
        failed = any(s["terminated"].get("exitCode") for s in states)
        pod["status"]["phase"] = "Failed" if failed else "Succeeded"
        ready = "False"
    else:
        ready = "False"
    pod["status"]["conditions"] = [
        {"type": t, "status": s, "lastTransitionTime": _timestamp()}
        for t, s in (
            ("Initialized", "True"),
            ("Ready", ready),
            ("ContainersReady", ready),
            ("PodScheduled", "True"),
        )
    ]


def _run_as(pod: Obj, container: Obj) -> tuple[int, int] | None:
    """``(uid, gid)`` for a container's process, as the kubelet merges them: the container's
    ``securityContext`` over the pod's; the group defaults to 0 (an image without a group
    for the user), as Kubernetes does. None when kubesim cannot switch (it is not root) or
    no user is asked for: the process runs as kubesim does."""
    if os.geteuid() != 0:
        return None
    pod_context = (pod.get("spec") or {}).get("securityContext") or {}
    context = container.get("securityContext") or {}
    user = context.get("runAsUser", pod_context.get("runAsUser"))
    group = context.get("runAsGroup", pod_context.get("runAsGroup"))
    if not isinstance(user, int) or isinstance(user, bool) or user <= 0:
        return None
    return user, group if isinstance(group, int) and not isinstance(group, bool) else 0
