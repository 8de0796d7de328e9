"""The approved debug toolbox image (images/debug-toolbox): it installs exactly what the docs
promise operators, runs the bastion's watchdog command, passes hadolint and checkov, and the
local stack, the tests and the docs all name the same image reference.

No container engine runs here, so the Dockerfile is read as instructions: the tools it
installs are the arguments of its two install steps (build-busybox.sh and collect-rootfs.sh),
followed from stage to stage into the final image.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from devstack.kubesim_harness import TOOLBOX

from bastion.cli import demo
from bastion.debug_container import watchdog_command
from bastion.devstack.kubesim.fixture import load_fixture
from bastion.devstack.stack import DEFAULT_FIXTURE
from bastion.devstack.toolbox import TOOLBOX_IMAGE
from bastion.errors import BastionError
from bastion.images import parse_pinned_image

ROOT = Path(__file__).resolve().parents[1]
IMAGE_DIR = ROOT / "images" / "debug-toolbox"
DOCKERFILE = IMAGE_DIR / "Dockerfile"
TOOLS_TXT = IMAGE_DIR / "tools.txt"
TOOLBOX_DOC = ROOT / "docs" / "toolbox.md"
DEMO_FIXTURE = ROOT / "bastion" / "devstack" / "fixtures" / DEFAULT_FIXTURE
PINNED_BASE = re.compile(r"[a-z0-9][a-z0-9./_-]*:[\w.-]+@sha256:[0-9a-f]{64}")
TOOLBOX_REFERENCE = re.compile(r"[\w.-]+(?:/[\w.-]+)*/debug-toolbox@sha256:[0-9a-f]{64}")
OCI_LABELS = ("title", "description", "version", "revision", "source", "licenses")
PACKAGE_MANAGERS = {"apt", "apt-get", "dpkg", "apk", "yum", "dnf", "rpm", "pip"}


# ----------------------------------------------------------------------- reading the image
@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages and their instructions, as BuildKit reads them: a trailing backslash continues
    an instruction, and comment lines are dropped even inside a continued one."""
    stages: list[Stage] = []
    pending: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        continued = stripped.endswith("\\")
        pending.append(stripped.removesuffix("\\").strip())
        if continued:
            continue
        keyword, _, arguments = " ".join(pending).partition(" ")
        pending = []
        instruction = Instruction(keyword.upper(), arguments.strip(), start)
        if instruction.keyword == "FROM":
            words = instruction.arguments.split()
            named = len(words) == 3 and words[1].upper() == "AS"
            stages.append(Stage(words[0], words[2] if named else None))
        else:
            assert stages, f"Dockerfile:{start}: {instruction.keyword} before the first FROM"
            stages[-1].instructions.append(instruction)
    assert not pending, "Dockerfile ends inside a continued instruction"
    return stages


def script_arguments(stage: Stage, script: str) -> list[str]:
    """The arguments of the one RUN command in ``stage`` that runs ``script``."""
    found = []
    for run in stage.all("RUN"):
        words = shlex.split(run.arguments)
        for at, word in enumerate(words):
            if Path(word).name == script:
                rest = words[at + 1 :]
                found.append(rest[: rest.index("&&")] if "&&" in rest else rest)
    assert len(found) == 1, f"stage {stage.name}: expected one RUN of {script}, found {found}"
    return found[0]


def stage_named(stages: list[Stage], name: str) -> Stage:
    matches = [s for s in stages if s.name == name]
    assert len(matches) == 1, f"no single stage named {name!r}"
    return matches[0]


def stage_running(stages: list[Stage], script: str) -> Stage:
    matches = [s for s in stages if any(script in r.arguments for r in s.all("RUN"))]
    assert len(matches) == 1, f"expected one stage running {script}"
    return matches[0]


def copies_from(stage: Stage, source: str) -> list[list[str]]:
    """The ``COPY --from=source`` instructions of ``stage``, as [src..., dest]."""
    prefix = f"--from={source}"
    return [
        words[1:]
        for words in (c.arguments.split() for c in stage.all("COPY"))
        if words[0] == prefix
    ]


@dataclass(frozen=True)
class ImageTools:
    applets: list[str]  # busybox applets, linked in /bin
    programs: list[str]  # Debian programs, at their own paths

    @property
    def names(self) -> set[str]:
        return set(self.applets) | {Path(p).name for p in self.programs}


def image_tools(stages: list[Stage]) -> ImageTools:
    """What the final image gets, following /rootfs from the busybox stage through the tools
    stage into the final one; a broken link in that chain fails here."""
    busybox = stage_running(stages, "build-busybox.sh")
    source_dir, config, busybox_rootfs, *applets = script_arguments(busybox, "build-busybox.sh")
    assert config.endswith("/busybox.config")
    # apt-get source unpacks busybox=[EPOCH:]UPSTREAM-REVISION into busybox-UPSTREAM.
    runs = " ".join(run.arguments for run in busybox.all("RUN"))
    pinned = re.search(r"apt-get source busybox=(?:\d+:)?([\w.+~]+)-[\w.+~]+", runs)
    assert pinned, "the busybox stage does not fetch a pinned busybox source package"
    assert Path(source_dir).name == f"busybox-{pinned[1]}"
    tools = stage_running(stages, "collect-rootfs.sh")
    tools_rootfs, *programs = script_arguments(tools, "collect-rootfs.sh")
    assert [f"{busybox_rootfs}/", f"{tools_rootfs}/"] in copies_from(tools, str(busybox.name)), (
        f"stage {tools.name} does not copy {busybox_rootfs}/ of stage {busybox.name} into "
        f"{tools_rootfs}/"
    )
    assert [f"{tools_rootfs}/", "/"] in copies_from(stages[-1], str(tools.name)), (
        f"the final stage does not copy {tools_rootfs}/ of stage {tools.name} to /"
    )
    return ImageTools(applets, programs)


def tools_txt() -> dict[str, str]:
    """tools.txt as tool -> why; every tool line must say why."""
    tools: dict[str, str] = {}
    for number, line in enumerate(TOOLS_TXT.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, why = line.partition("#")
        assert re.fullmatch(r"[a-z0-9_-]+", name.strip()), f"tools.txt:{number}: {line!r}"
        assert why.strip(), f"tools.txt:{number}: {name.strip()} does not say why it is there"
        assert name.strip() not in tools, f"tools.txt:{number}: {name.strip()} twice"
        tools[name.strip()] = why.strip()
    return tools


def documented_tools() -> list[str]:
    """The tools docs/toolbox.md promises: the first column of its "## Tools" table."""
    section = TOOLBOX_DOC.read_text().split("\n## Tools\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z0-9_-]+)` \|", section, flags=re.MULTILINE)


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


# ----------------------------------------------------------------------------- what it ships
def test_docs_tools_txt_and_the_dockerfile_name_the_same_tools(stages: list[Stage]) -> None:
    promised = documented_tools()
    listed = tools_txt()
    installed = image_tools(stages)
    assert len(promised) >= 10, "docs/toolbox.md: the Tools table was not found"
    assert len(promised) == len(set(promised)), "docs/toolbox.md lists a tool twice"
    assert set(promised) - set(listed) == set(), "promised by docs/toolbox.md, not in tools.txt"
    assert set(listed) - set(promised) == set(), "in tools.txt, not in docs/toolbox.md"
    assert set(listed) - installed.names == set(), "in tools.txt, not installed by the Dockerfile"
    assert installed.names - set(listed) == set(), "installed by the Dockerfile, not in tools.txt"
    assert not PACKAGE_MANAGERS & installed.names


def test_the_image_runs_the_bastions_watchdog_command(stages: list[Stage]) -> None:
    command = watchdog_command("0123abcd", 60)
    script = shlex.split(command[2])
    assert (command[0], script[:2], script[-2:]) == ("/bin/sh", ["exec", "timeout"], ["sh", "-i"])
    installed = image_tools(stages)
    assert "sh" in installed.applets  # build-busybox.sh links applets in /bin: /bin/sh
    assert '"$rootfs/bin/$applet"' in (IMAGE_DIR / "build-busybox.sh").read_text()
    # coreutils' timeout, not busybox's: busybox's signals the shell from a child process,
    # which the kernel ignores when the shell is PID 1 of its PID namespace (pod mode).
    assert "timeout" not in installed.applets
    assert "/usr/bin/timeout" in installed.programs
    assert {"sh", "timeout"} <= set(tools_txt())


def test_busybox_is_built_with_the_applets_it_links(stages: list[Stage]) -> None:
    config = (IMAGE_DIR / "busybox.config").read_text()
    enabled = set(re.findall(r"^CONFIG_(\w+)=y$", config, flags=re.MULTILINE))
    assert {"STATIC", "SH_IS_ASH", "SHELL_ASH"} <= enabled
    applets = image_tools(stages).applets
    missing = [a for a in applets if a != "sh" and a.upper() not in enabled]
    assert missing == [], "linked in the Dockerfile but not enabled in busybox.config"


def test_bases_are_pinned_and_the_final_stage_is_empty_and_non_root(
    stages: list[Stage],
) -> None:
    names = {s.name for s in stages}
    for stage in stages:
        assert (
            stage.base in names or stage.base == "scratch" or PINNED_BASE.fullmatch(stage.base)
        ), f"stage {stage.name}: base {stage.base!r} is not pinned as name:tag@sha256:<digest>"
    final = stages[-1]
    # scratch: no shell, no package manager, nothing but what the COPY lines bring.
    assert final.base == "scratch"
    assert final.all("RUN") == []
    for copy in final.all("COPY"):
        words = copy.arguments.split()
        assert words[0].startswith("--from=") or all(w.startswith("etc/") for w in words[:-1])
    assert final.all("USER")[-1].arguments == "65532:65532"
    labels = " ".join(i.arguments for i in final.all("LABEL"))
    for label in OCI_LABELS:
        assert re.search(rf'org\.opencontainers\.image\.{label}="[^"]+"', labels), label


def test_the_image_user_is_uid_65532_without_a_home() -> None:
    passwd = (IMAGE_DIR / "etc" / "passwd").read_text().splitlines()
    users = {fields[2]: fields for fields in (line.split(":") for line in passwd)}
    assert users["65532"][5] == "/nonexistent"  # read-only root: nothing may expect a home
    assert users["65532"][6] == "/bin/sh"


# ------------------------------------------------------------------------------------ linters
def tool_path(name: str) -> Path:
    """A lint tool from the project's venv (dev extra) or the tools venv (.ci/bootstrap)."""
    for candidate in (Path(sys.executable).parent / name, ROOT / ".venv-tools" / "bin" / name):
        if candidate.is_file():
            return candidate
    pytest.fail(
        f"{name} is not installed next to {sys.executable} nor in .venv-tools: "
        "run `bash .ci/bootstrap test`, which installs both"
    )


@pytest.mark.slow
def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [tool_path("hadolint"), "--no-color", "--failure-threshold", "style", DOCKERFILE],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.slow
def test_checkov_finds_nothing() -> None:
    result = subprocess.run(
        [
            *(tool_path("checkov"), "-d", IMAGE_DIR, "--framework", "dockerfile"),
            *("--quiet", "--compact", "--skip-download", "--output", "json"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    report = json.loads(result.stdout)
    failed = [
        f"{c['check_id']} {c['check_name']}" for c in report["results"].get("failed_checks", [])
    ]
    assert failed == []
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] >= 20, "checkov ran almost no checks on the Dockerfile"


# ------------------------------------------------------------------- one reference everywhere
def test_one_toolbox_reference_for_the_demo_kubesim_tests_and_docs() -> None:
    parse_pinned_image(TOOLBOX_IMAGE)
    assert load_fixture(DEMO_FIXTURE).images[TOOLBOX_IMAGE].command == ("/bin/sh",)
    assert demo._toolbox(demo._demo_fixture()) == TOOLBOX_IMAGE
    assert TOOLBOX == TOOLBOX_IMAGE
    for path in (
        IMAGE_DIR / "README.md",
        TOOLBOX_DOC,
        DEMO_FIXTURE,
        ROOT / "bastion" / "examples" / "bastion.yaml",
    ):
        named = set(TOOLBOX_REFERENCE.findall(path.read_text()))
        assert named == {TOOLBOX_IMAGE}, f"{path.relative_to(ROOT)} names {named}"


def test_the_demo_refuses_a_fixture_that_does_not_run_the_toolbox() -> None:
    fixture = demo._demo_fixture()
    del fixture["images"][TOOLBOX_IMAGE]
    with pytest.raises(BastionError, match="maps no local command to the toolbox image"):
        demo._toolbox(fixture)
