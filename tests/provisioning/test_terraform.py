"""terraform/: formatted, checkov-clean, every variable documented, secrets marked sensitive,
providers pinned, every reference resolving, and the rules in the Vault roles and the secrets
engine's Roles equal to the bastion's own list (bastion.kube_permissions).

No provider can be downloaded here, so the modules that use providers are read with
python-hcl2, not planned. The permissions module, which computes every rule, TTL and the
bastion's Vault policy, has no provider: it is run for real with terraform 1.0.3 (init and
apply on a throwaway root, about 0.3 s) and its outputs are compared with the Python.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import hcl2
import pytest
from hcl2 import SerializationOptions
from test_toolbox_image import tool_path

from bastion.debug_container import MANAGED_BY_LABEL
from bastion.kube_permissions import (
    BROWSE_RULES,
    ENGINE_ACCOUNT_RULES,
    ENGINE_CLUSTER_ROLE_RULES,
    ENGINE_ROLE_RULES,
    Rule,
    rules_for_modes,
    view_rules,
)
from bastion.policy import Mode, Scope

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
PERMISSIONS_JSON = TERRAFORM / "modules" / "permissions" / "permissions.json"
EXAMPLE = TERRAFORM / "examples" / "complete"
_HCL = SerializationOptions(
    with_comments=False, explicit_blocks=False, strip_string_quotes=True, preserve_heredocs=False
)


# --------------------------------------------------------------------------- reading HCL
def parse(path: Path) -> dict[str, Any]:
    # python-hcl2 takes about 50 ms a file: parse each version of a file once.
    stat = path.stat()
    return _parse(path, stat.st_mtime_ns, stat.st_size)


@functools.cache
def _parse(path: Path, _mtime_ns: int, _size: int) -> dict[str, Any]:
    with path.open() as f:
        parsed: dict[str, Any] = hcl2.load(f, serialization_options=_HCL)
    return parsed


def blocks(config: Mapping[str, Any], kind: str) -> Iterator[tuple[str, Any]]:
    """``(label, body)`` of every ``kind`` block (variable, output, module, locals...)."""
    for entry in config.get(kind, []):
        yield from entry.items()


def resources(config: Mapping[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for entry in config.get("resource", []):
        for rtype, named in entry.items():
            for name, body in named.items():
                yield rtype, name, body


@dataclass
class Module:
    """One directory of .tf files, as Terraform reads it."""

    path: Path
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    resources: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    terraform: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Module:
        module = cls(path)
        for file in sorted(path.glob("*.tf")):
            config = parse(file)
            module.variables.update(blocks(config, "variable"))
            module.outputs.update(blocks(config, "output"))
            module.calls.update(blocks(config, "module"))
            module.terraform.extend(config.get("terraform", []))
            for entry in config.get("locals", []):
                module.locals.update(entry)
            for rtype, name, body in resources(config):
                module.resources[rtype, name] = body
        return module

    def called(self, name: str) -> Module:
        return Module.load((self.path / self.calls[name]["source"]).resolve())


def module_dirs(terraform: Path = TERRAFORM) -> list[Path]:
    return sorted(
        {file.parent for file in terraform.rglob("*.tf") if ".terraform" not in file.parts}
    )


def strings(value: Any) -> Iterator[str]:
    """Every string in a parsed value: literals, and expressions as ``${...}``."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def expressions(value: Any) -> Iterator[str]:
    return (s for s in strings(value) if "${" in s)


# ------------------------------------------------------------------------ running terraform
def terraform(*args: str | Path, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(cwd),
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
        "CHECKPOINT_DISABLE": "1",
        # No user CLI config (plugin caches, credentials, mirrors) may change what runs here.
        "TF_CLI_CONFIG_FILE": os.devnull,
    }
    result = subprocess.run(
        [tool_path("terraform"), *args, "-no-color"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if check and result.returncode != 0:
        pytest.fail(f"terraform {args[0]} failed:\n{result.stdout}\n{result.stderr}")
    return result


class Permissions:
    """The permissions module applied for real: a root module in ``workdir`` that passes its
    variables through and outputs everything. ``source`` is a copy of a permissions module
    (the repository's, or a mutated one)."""

    def __init__(self, workdir: Path, source: Path = TERRAFORM / "modules" / "permissions"):
        self.workdir = workdir
        shutil.copytree(source, workdir / "permissions")
        arguments = (
            "clusters", "grants", "mount_prefix", "browse_role_name", "reserved_namespaces",
            "token_default_ttl", "token_max_ttl", "token_max_ttls", "grant_scopes",
        )  # fmt: skip
        root = {
            "variable": {name: {} for name in arguments},
            "module": {
                "permissions": {"source": "./permissions"}
                | {name: f"${{var.{name}}}" for name in arguments}
            },
            "output": {"all": {"value": "${module.permissions}"}},
        }
        (workdir / "main.tf.json").write_text(json.dumps(root, indent=2))
        terraform("init", "-backend=false", cwd=workdir)
        self._runs = 0

    def apply(self, clusters: Mapping[str, Any], grants: Mapping[str, Any], **more: Any) -> Any:
        """The module's outputs for these inputs; pytest.fail with Terraform's error if any."""
        result = self.run(clusters, grants, **more)
        if result.returncode != 0:
            pytest.fail(f"terraform apply failed:\n{result.stderr}")
        state = self.workdir / f"{self._runs}.tfstate"
        shown = terraform("output", f"-state={state}", "-json", "all", cwd=self.workdir)
        return json.loads(shown.stdout)

    def refused(self, clusters: Mapping[str, Any], grants: Mapping[str, Any], **more: Any) -> str:
        """Terraform's error for inputs the module must refuse, on one line."""
        result = self.run(clusters, grants, **more)
        assert result.returncode != 0, "terraform accepted inputs it must refuse"
        return " ".join(result.stderr.split())

    def run(
        self, clusters: Mapping[str, Any], grants: Mapping[str, Any], **more: Any
    ) -> subprocess.CompletedProcess[str]:
        defaults: dict[str, Any] = {
            "mount_prefix": "kubernetes-",
            "browse_role_name": "bastion-browse",
            "reserved_namespaces": [],
            "token_default_ttl": 600,
            "token_max_ttl": 600,
            "token_max_ttls": {},
            "grant_scopes": {},
        }
        self._runs += 1
        variables = self.workdir / f"{self._runs}.tfvars.json"
        variables.write_text(json.dumps(defaults | more | {"clusters": clusters, "grants": grants}))
        return terraform(
            "apply",
            "-auto-approve",
            f"-state={self.workdir / f'{self._runs}.tfstate'}",
            f"-var-file={variables}",
            cwd=self.workdir,
            check=False,
        )


@pytest.fixture(scope="module")
def permissions(tmp_path_factory: pytest.TempPathFactory) -> Permissions:
    return Permissions(tmp_path_factory.mktemp("permissions"))


def kube(rules: Iterable[Rule]) -> list[dict[str, list[str]]]:
    return [rule.as_kubernetes() for rule in rules]


def grant(clusters: list[str], namespaces: list[str], modes: list[str]) -> dict[str, Any]:
    return {"clusters": clusters, "namespaces": namespaces, "modes": modes}


# ------------------------------------------------------------------------------ linters
def test_terraform_fmt_finds_nothing_to_change() -> None:
    result = terraform("fmt", "-check", "-recursive", "-diff", TERRAFORM, cwd=ROOT, check=False)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.slow
def test_checkov_finds_nothing() -> None:
    result = subprocess.run(
        [
            *(tool_path("checkov"), "-d", TERRAFORM, "--framework", "terraform"),
            *("--quiet", "--compact", "--skip-download", "--output", "json"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )
    report = json.loads(result.stdout)
    failed = [
        f"{c['check_id']} {c['resource']}: {c['check_name']}"
        for c in report["results"].get("failed_checks", [])
    ]
    assert failed == []
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] >= 10, "checkov ran almost no checks on terraform/"
    # A skip needs its reason next to it: `#checkov:skip=CKV_X:why`.
    unexplained = [
        f"{c['check_id']} {c['resource']}"
        for c in report["results"].get("skipped_checks", [])
        if not (c.get("check_result", {}).get("suppress_comment") or "").strip()
    ]
    assert unexplained == []


# ----------------------------------------------------------------------- documentation
def test_every_variable_has_a_description_and_a_type() -> None:
    missing = [
        f"{directory.relative_to(ROOT)}: variable {name} has no {what}"
        for directory in module_dirs()
        for name, body in Module.load(directory).variables.items()
        for what in ("description", "type")
        if not str(body.get(what, "")).strip()
    ]
    assert missing == []


def test_every_output_has_a_description() -> None:
    missing = [
        f"{directory.relative_to(ROOT)}: output {name}"
        for directory in module_dirs()
        for name, body in Module.load(directory).outputs.items()
        if not str(body.get("description", "")).strip()
    ]
    assert missing == []


SECRET_NAME = re.compile(r"(^|_)(jwts?|token|password|secret_id|private_key)$")


def test_secret_variables_and_outputs_are_sensitive() -> None:
    found, loose = [], []
    for directory in module_dirs():
        module = Module.load(directory)
        for kind, declared in (("variable", module.variables), ("output", module.outputs)):
            for name, body in declared.items():
                if SECRET_NAME.search(name):
                    found.append(name)
                    if body.get("sensitive") is not True:
                        loose.append(f"{directory.relative_to(ROOT)}: {kind} {name}")
    assert loose == []
    assert {"service_account_jwts", "engine_service_account_token"} <= set(found)


# ----------------------------------------------------------------------- providers, refs
def test_every_module_pins_terraform_and_its_providers() -> None:
    problems = []
    for directory in module_dirs():
        module = Module.load(directory)
        where = directory.relative_to(ROOT)
        settings = [block for block in module.terraform if "required_version" in block]
        if not settings:
            problems.append(f"{where}: no required_version")
        declared = {
            name: spec
            for block in module.terraform
            for entry in block.get("required_providers", [])
            for name, spec in entry.items()
        }
        used = {rtype.split("_", 1)[0] for rtype, _ in module.resources}
        problems += [
            f"{where}: provider {provider} used but not in required_providers"
            for provider in sorted(used - declared.keys())
        ]
        for name, spec in declared.items():
            if spec.get("source") != f"hashicorp/{name}":
                problems.append(f"{where}: provider {name} has source {spec.get('source')}")
            version = str(spec.get("version", ""))
            if not ("~>" in version or "<" in version):
                problems.append(f"{where}: provider {name} version {version!r} has no upper bound")
    assert problems == []


REFERENCES = (
    ("var", re.compile(r"(?<![\w.])var\.([A-Za-z_][\w-]*)")),
    ("local", re.compile(r"(?<![\w.])local\.([A-Za-z_][\w-]*)")),
    ("module", re.compile(r"(?<![\w.])module\.([\w-]+\.[A-Za-z_][\w-]*)")),
    ("resource", re.compile(r"(?<![\w.])((?:vault|kubernetes)_\w+\.[A-Za-z_][\w-]*)")),
)


def reference_problems(directory: Path) -> list[str]:
    """What ``terraform validate`` would say about references, which it cannot here (it
    needs the providers): every var., local., module. and resource reference resolves, and
    every module call passes only declared variables and all required ones."""
    module = Module.load(directory)
    where = directory.relative_to(ROOT) if directory.is_relative_to(ROOT) else directory
    everything = [
        module.locals,
        module.outputs,
        module.calls,
        list(module.resources.values()),
        [body.get("validation", []) for body in module.variables.values()],
    ]
    resources = {f"{rtype}.{name}" for rtype, name in module.resources}

    def resolves(kind: str, name: str) -> bool:
        if kind == "var":
            return name in module.variables
        if kind == "local":
            return name in module.locals
        if kind == "resource":
            return name in resources
        call, output = name.split(".")
        return call in module.calls and output in module.called(call).outputs

    problems = [
        f"{where}: {kind}:{name} does not resolve"
        for text in expressions(everything)
        for kind, pattern in REFERENCES
        for name in pattern.findall(text)
        if not resolves(kind, name)
    ]
    for call, arguments in module.calls.items():
        target = module.called(call)
        passed = set(arguments) - {"source", "version", "providers", "count", "for_each"}
        required = {name for name, body in target.variables.items() if "default" not in body}
        problems += [
            f"{where}: module {call} has no variable {name}"
            for name in sorted(passed - target.variables.keys())
        ]
        problems += [f"{where}: module {call} needs {name}" for name in sorted(required - passed)]
    return problems


def test_every_reference_resolves() -> None:
    assert [p for directory in module_dirs() for p in reference_problems(directory)] == []


def test_the_reference_check_sees_a_typo(tmp_path: Path) -> None:
    copy = tmp_path / "vault"
    shutil.copytree(TERRAFORM / "modules" / "vault", copy)
    shutil.copytree(TERRAFORM / "modules" / "permissions", tmp_path / "permissions")
    main = copy / "main.tf"
    main.write_text(
        main.read_text()
        .replace("var.secret_id_ttl", "var.secret_id_tll")
        .replace("module.permissions.bastion_policy", "module.permissions.policy")
    )
    assert sorted(reference_problems(copy)) == [
        f"{copy}: module:permissions.policy does not resolve",
        f"{copy}: var:secret_id_tll does not resolve",
    ]


# ------------------------------------------------------------- one source of truth: rules
def generator() -> ModuleType:
    """terraform/generate_permissions.py (a script: terraform/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "generate_permissions", TERRAFORM / "generate_permissions.py"
    )
    assert spec is not None
    assert spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_permissions_json_is_generated_from_kube_permissions() -> None:
    assert PERMISSIONS_JSON.read_text() == generator().render(), (
        "terraform/modules/permissions/permissions.json is stale: run "
        ".venv/bin/python terraform/generate_permissions.py and commit it"
    )


def _vault_rule_problems(terraform_dir: Path) -> list[str]:
    vault = Module.load(terraform_dir / "modules" / "vault")
    roles = [
        body
        for (rtype, _), body in vault.resources.items()
        if rtype == "vault_kubernetes_secret_backend_role"
    ]
    problems = [] if len(roles) == 1 else [f"the vault module has {len(roles)} role resources"]
    wanted = {
        "for_each": "${module.permissions.vault_roles}",
        "generated_role_rules": "${each.value.generated_role_rules}",
        "allowed_kubernetes_namespaces": "${each.value.namespaces}",
        "kubernetes_role_type": "${each.value.kubernetes_role_type}",
        "token_default_ttl": "${each.value.token_default_ttl}",
        "token_max_ttl": "${each.value.token_max_ttl}",
    }
    problems += [
        f"vault role: {key} = {body.get(key)!r}, expected {value!r}"
        for body in roles
        for key, value in wanted.items()
        if body.get(key) != value
    ]
    policy = vault.resources.get(("vault_policy", "bastion"), {}).get("policy")
    if policy != "${module.permissions.bastion_policy}":
        problems.append(f"vault policy: {policy!r}, not module.permissions.bastion_policy")
    return problems


def _kubernetes_rule_problems(directory: Path) -> list[str]:
    problems = []
    for (rtype, name), body in Module.load(directory).resources.items():
        if rtype not in {"kubernetes_role_v1", "kubernetes_cluster_role_v1"}:
            continue
        where = f"{directory.name}: {rtype}.{name}"
        if "rule" in body:
            problems.append(f"{where} writes a rule block itself")
        if not str(body.get("for_each", "")).startswith("${module.permissions."):
            problems.append(f"{where} is not made per module.permissions output")
        problems += [
            f"{where}: {key} = {rule.get(key)!r}"
            for dynamic in body.get("dynamic", [])
            for rule in dynamic.get("rule", {}).get("content", [])
            for key, source in (
                ("api_groups", "apiGroups"),
                ("resources", "resources"),
                ("verbs", "verbs"),
            )
            if rule.get(key) != f"${{rule.value.{source}}}"
        ]
    return problems


def rule_source_problems(terraform_dir: Path) -> list[str]:
    """Every Kubernetes rule in terraform/ must come from the permissions module, which takes
    them from permissions.json: no rule, verb or resource list written in HCL."""
    problems = _vault_rule_problems(terraform_dir)
    for directory in module_dirs(terraform_dir):
        problems += _kubernetes_rule_problems(directory)
    permissions = Module.load(terraform_dir / "modules" / "permissions")
    if permissions.locals.get("permissions") != (
        '${jsondecode(file("${path.module}/permissions.json"))}'
    ):
        problems.append("the permissions module does not read permissions.json")
    literal = re.compile(r"\b(verbs|resources|api_groups|apiGroups)\s*=\s*\[")
    problems += [
        f"{file.relative_to(terraform_dir)} writes a rule's {match[1]} itself"
        for file in sorted(terraform_dir.rglob("*.tf"))
        for match in literal.finditer(file.read_text())
    ]
    return problems


def test_every_rule_comes_from_the_permissions_module() -> None:
    assert rule_source_problems(TERRAFORM) == []


def test_rules_written_in_hcl_are_caught(tmp_path: Path) -> None:
    """The check above fails when someone writes rules into the HCL instead."""
    copy = tmp_path / "terraform"
    shutil.copytree(TERRAFORM, copy, ignore=shutil.ignore_patterns(".terraform*"))
    vault = copy / "modules" / "vault" / "main.tf"
    vault.write_text(
        vault.read_text().replace(
            "each.value.generated_role_rules",
            'jsonencode({ rules = [{ apiGroups = [""], resources = ["secrets"], '
            'verbs = ["get"] }] })',
        )
    )
    kubernetes = copy / "modules" / "kubernetes" / "main.tf"
    kubernetes.write_text(
        kubernetes.read_text().replace(
            "verbs      = rule.value.verbs", 'verbs      = concat(rule.value.verbs, ["escalate"])'
        )
    )
    problems = rule_source_problems(copy)
    assert any(p.startswith("vault role: generated_role_rules = ") for p in problems)
    assert any(p.startswith("kubernetes: kubernetes_role_v1.engine: verbs = ") for p in problems)
    assert "modules/vault/main.tf writes a rule's verbs itself" in problems


ALL_MODES = sorted(mode.value for mode in Mode)
GRANTS = {
    "debug-payments": grant(["prod", "staging"], ["payments"], ["ephemeral"]),
    "debug-checkout": grant(["prod"], ["checkout", "payments"], ["copy", "ephemeral"]),
    "debug-toolbox": grant(["staging"], ["tools"], ["pod"]),
    "debug-all": grant(["staging"], ["payments", "tools"], ALL_MODES),
}
CLUSTERS = {"prod": {"browse_namespace": "bastion-browse"}, "staging": {"browse_namespace": ""}}


def rules_problems(
    outputs: Mapping[str, Any],
    grants: Mapping[str, Any],
    clusters: Mapping[str, Any] = CLUSTERS,
    grant_scopes: Mapping[str, list[str]] | None = None,
) -> list[str]:
    """Where the module's evaluated rules differ from bastion.kube_permissions."""
    scopes = grant_scopes or {}

    def views(name: str) -> list[Rule]:
        return view_rules(Scope(s) for s in scopes.get(name, ["shell"]))

    problems = []
    roles = outputs["vault_roles"]
    for name, spec in grants.items():
        want = kube(rules_for_modes(Mode(m) for m in spec["modes"])) + kube(views(name))
        for cluster in spec["clusters"]:
            role = roles[f"{cluster}/{name}"]
            got = json.loads(role["generated_role_rules"])
            if got != {"rules": want} or role["rules"] != want:
                problems.append(f"{cluster}/{name}: {got} != rules_for_modes{spec['modes']}")
    for cluster, settings in clusters.items():
        browse = roles.get(f"{cluster}/bastion-browse")
        if settings["browse_namespace"] and (
            browse is None
            or json.loads(browse["generated_role_rules"]) != {"rules": kube(BROWSE_RULES)}
        ):
            problems.append(f"{cluster}: the browse role's rules are not BROWSE_RULES")
    for cluster, namespaces in outputs["engine_namespace_rules"].items():
        for namespace, got in namespaces.items():
            modes = {
                Mode(m)
                for spec in grants.values()
                if cluster in spec["clusters"] and namespace in spec["namespaces"]
                for m in spec["modes"]
            }
            want = kube([*ENGINE_ACCOUNT_RULES, *ENGINE_ROLE_RULES, *rules_for_modes(modes)])
            # Terraform walks the grants in key order and keeps each view rule's first place.
            for rule in kube(
                rule
                for name in sorted(grants)
                if cluster in grants[name]["clusters"] and namespace in grants[name]["namespaces"]
                for rule in views(name)
            ):
                if rule not in want:
                    want.append(rule)
            if got != want:
                problems.append(f"engine in {cluster}/{namespace}: {got} != {want}")
    for cluster, browse in outputs["engine_browse_rules"].items():
        if browse["namespace_rules"] != kube(ENGINE_ACCOUNT_RULES) or browse[
            "cluster_rules"
        ] != kube([*ENGINE_CLUSTER_ROLE_RULES, *BROWSE_RULES]):
            problems.append(f"engine's browse rights on {cluster} are not kube_permissions'")
    if outputs["managed_by_labels"] != dict([MANAGED_BY_LABEL]):
        problems.append(f"labels {outputs['managed_by_labels']}")
    return problems


def test_the_roles_and_the_engine_get_exactly_the_bastions_rules(permissions: Permissions) -> None:
    outputs = permissions.apply(CLUSTERS, GRANTS)
    assert rules_problems(outputs, GRANTS) == []
    roles = outputs["vault_roles"]
    assert sorted(roles) == [
        "prod/bastion-browse",
        "prod/debug-checkout",
        "prod/debug-payments",
        "staging/debug-all",
        "staging/debug-payments",
        "staging/debug-toolbox",
    ]
    # Pods may be created only where a grant allows copy or toolbox pods.
    creates_pods = {
        key
        for key, role in roles.items()
        if any("create" in r["verbs"] and r["resources"] == ["pods"] for r in role["rules"])
    }
    assert creates_pods == {"prod/debug-checkout", "staging/debug-toolbox", "staging/debug-all"}
    assert roles["prod/bastion-browse"]["kubernetes_role_type"] == "ClusterRole"
    assert roles["prod/bastion-browse"]["namespaces"] == ["bastion-browse"]
    assert {r["kubernetes_role_type"] for k, r in roles.items() if "browse" not in k} == {"Role"}
    assert roles["prod/debug-checkout"]["namespaces"] == ["checkout", "payments"]
    assert outputs["mounts"] == {"prod": "kubernetes-prod", "staging": "kubernetes-staging"}
    # The engine holds, per namespace, only what the grants naming it hand out there.
    assert sorted(outputs["engine_namespace_rules"]["staging"]) == ["payments", "tools"]
    assert sorted(outputs["engine_namespace_rules"]["prod"]) == ["checkout", "payments"]
    # No browse role on staging: the engine gets no cluster-wide right there.
    assert list(outputs["engine_browse_rules"]) == ["prod"]


def test_grants_with_views_get_exec_and_log_rules_and_the_engine_holds_them(
    permissions: Permissions,
) -> None:
    scopes = {"debug-payments": ["processes", "logs"], "debug-toolbox": ["shell", "env"]}
    outputs = permissions.apply(CLUSTERS, GRANTS, grant_scopes=scopes)
    assert rules_problems(outputs, GRANTS, grant_scopes=scopes) == []
    roles = outputs["vault_roles"]
    resources = {r["resources"][0] for r in roles["prod/debug-payments"]["rules"]}
    assert {"pods/exec", "pods/log"} <= resources
    # The env view reads the pod, which every role may: nothing more for it.
    assert roles["staging/debug-toolbox"]["rules"] == kube(rules_for_modes([Mode.POD]))
    engine = outputs["engine_namespace_rules"]["prod"]["payments"]
    assert {"pods/exec", "pods/log"} <= {r["resources"][0] for r in engine}
    assert "pods/log" not in {
        r["resources"][0] for r in outputs["engine_namespace_rules"]["prod"]["checkout"]
    }
    refused = permissions.refused(CLUSTERS, GRANTS, grant_scopes={"typo": ["env"]})
    assert "grant_scopes names typo, which is not a grant" in refused
    refused = permissions.refused(CLUSTERS, GRANTS, grant_scopes={"debug-payments": ["root"]})
    assert "A grant's scopes are" in refused


def test_a_stale_permissions_json_gives_rules_the_comparison_rejects(tmp_path: Path) -> None:
    """Drift caught at both ends: a hand-edited permissions.json (here: the engine and the
    roles may read secrets) is not what the generator writes, and the rules Terraform
    computes from it no longer equal the bastion's."""
    module = tmp_path / "permissions"
    shutil.copytree(TERRAFORM / "modules" / "permissions", module)
    document = json.loads((module / "permissions.json").read_text())
    for rules in document["session_rules"].values():
        rules[0]["resources"].append("secrets")
    (module / "permissions.json").write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    assert (module / "permissions.json").read_text() != generator().render()

    outputs = Permissions(tmp_path / "run", module).apply(CLUSTERS, GRANTS)
    problems = rules_problems(outputs, GRANTS)
    assert any(p.startswith("prod/debug-payments:") for p in problems)
    assert any(p.startswith("engine in prod/checkout:") for p in problems)


# ---------------------------------------------------------------------- TTLs and policy
def test_tokens_live_ten_minutes_unless_a_role_says_otherwise(permissions: Permissions) -> None:
    outputs = permissions.apply(CLUSTERS, GRANTS, token_max_ttls={"debug-checkout": 1800})
    ttls = {
        k: (r["token_default_ttl"], r["token_max_ttl"]) for k, r in outputs["vault_roles"].items()
    }
    assert ttls.pop("prod/debug-checkout") == (600, 1800)
    assert set(ttls.values()) == {(600, 600)}
    # The mount caps its leases at its longest role.
    assert outputs["mount_max_lease_ttls"] == {"prod": 1800, "staging": 600}


def test_the_bastion_policy_allows_only_its_paths(permissions: Permissions) -> None:
    outputs = permissions.apply(CLUSTERS, GRANTS)
    policy = json.loads(outputs["bastion_policy"])["path"]
    creds = {
        f"kubernetes-{cluster}/creds/{name}"
        for name, spec in GRANTS.items()
        for cluster in spec["clusters"]
    } | {"kubernetes-prod/creds/bastion-browse"}
    assert set(policy) == creds | {
        "sys/leases/renew",
        "sys/leases/revoke",
        "auth/token/renew-self",
        "auth/token/lookup-self",
    }
    assert policy["auth/token/lookup-self"] == {"capabilities": ["read"]}
    assert policy["auth/token/renew-self"] == {"capabilities": ["update"]}
    own_leases = ["kubernetes-prod/creds/*", "kubernetes-staging/creds/*"]
    assert policy["sys/leases/revoke"] == {
        "capabilities": ["update"],
        "allowed_parameters": {"lease_id": own_leases, "sync": []},
    }
    assert policy["sys/leases/renew"]["allowed_parameters"] == {
        "lease_id": own_leases,
        "increment": [],
    }
    for path in creds:
        assert policy[path]["capabilities"] == ["update"]
        # No "audiences": a token for another relying party is never the bastion's to ask.
        assert set(policy[path]["allowed_parameters"]) <= {
            "kubernetes_namespace",
            "ttl",
            "cluster_role_binding",
        }
    assert (
        "cluster_role_binding"
        not in policy["kubernetes-prod/creds/debug-payments"]["allowed_parameters"]
    )


# ------------------------------------------------------------------------- refused inputs
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"grants": {"all": grant(["prod"], ["*"], ["ephemeral"])}},
            'never "*", a glob or a selector',
        ),
        (
            {"grants": {"glob": grant(["prod"], ["payments-*"], ["ephemeral"])}},
            'never "*", a glob or a selector',
        ),
        (
            {"grants": {"system": grant(["prod"], ["kube-system"], ["ephemeral"])}},
            "No grant may name kube-system",
        ),
        ({"grants": {"exec": grant(["prod"], ["payments"], ["exec"])}}, "A grant's modes are"),
        ({"grants": {"none": grant(["prod"], ["payments"], [])}}, "at least one cluster"),
        ({"token_max_ttl": 300}, "from 600 (Kubernetes' minimum)"),
        ({"token_max_ttls": {"debug-payments": 86400}}, "from 600 to 43200"),
        ({"token_max_ttls": {"typo": 1200}}, "token_max_ttls names typo"),
        ({"token_default_ttl": 1200}, "token_max_ttl (600 s) is less than token_default_ttl"),
        (
            {"grants": {"lost": grant(["nowhere"], ["payments"], ["ephemeral"])}},
            "grant lost names clusters that are not in clusters: nowhere",
        ),
        (
            {"grants": {"b": grant(["prod"], ["bastion-browse"], ["ephemeral"])}},
            "browse_namespace bastion-browse is a debug namespace too",
        ),
        (
            {"reserved_namespaces": ["payments"]},
            "grant debug-payments names reserved namespaces: payments",
        ),
        (
            {"clusters": CLUSTERS | {"dev": {"browse_namespace": "default"}}},
            "not default or kube-",
        ),
        ({"mount_prefix": "x" * 60}, "is not a name the bastion accepts"),
    ],
)
def test_unsafe_inputs_are_refused_with_a_reason(
    permissions: Permissions, change: dict[str, Any], message: str
) -> None:
    inputs: dict[str, Any] = {"clusters": CLUSTERS, "grants": GRANTS} | change
    assert message in permissions.refused(**inputs)


def test_the_example_passes_the_modules_checks(permissions: Permissions) -> None:
    example = parse(EXAMPLE / "example.tfvars")
    assert all("*" not in ns for g in example["grants"].values() for ns in g["namespaces"])
    clusters = {example["cluster_name"]: {"browse_namespace": example["browse_namespace"]}}
    outputs = permissions.apply(
        clusters, example["grants"], token_max_ttls=example["token_max_ttls"]
    )
    assert rules_problems(outputs, example["grants"], clusters) == []
    assert outputs["vault_roles"]["prod-eu/debug-payments"]["token_max_ttl"] == 1800
    assert reference_problems(EXAMPLE) == []
    unknown = set(example) - Module.load(EXAMPLE).variables.keys()
    assert unknown == set()
