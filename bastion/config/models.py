"""The configuration file's shape, as pydantic models. Unknown keys are errors everywhere.

Relative paths are resolved against the directory of the config file (passed in the
validation context as ``base_dir``). Secrets are never values in this file: it only names
the 0600 files that hold them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    model_validator,
)

from bastion.approval import DEFAULT_EXPIRY, ApprovalRule
from bastion.approval import Approvers as PolicyApprovers
from bastion.config.guard import Guard
from bastion.config.state import State, with_replica_log_name
from bastion.durations import format_duration, parse_duration
from bastion.globs import compile_glob
from bastion.images import parse_pinned_image
from bastion.introspect.paths import check_prefix
from bastion.labels import LabelSelector, SelectorError, parse_selector
from bastion.policy import Grant as PolicyGrant
from bastion.policy import Mode, Policy, Principal, Scope
from bastion.sshkeys import PublicKey, parse_public_key
from bastion.state.stores import StateStores

__all__ = [
    "AppRole",
    "Approval",
    "Approvers",
    "Audit",
    "BreakGlass",
    "BreakGlassAlerts",
    "BreakGlassGrant",
    "Cluster",
    "Config",
    "Grant",
    "Keys",
    "Limits",
    "Listener",
    "Oversight",
    "Paths",
    "ProxyProtocol",
    "Recording",
    "Shipping",
    "SyslogDestination",
    "TlsClient",
    "User",
    "Vault",
    "WebhookDestination",
]


def _resolve(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    if not value.is_absolute() and base is not None:
        return Path(base) / value
    return value


def _matching(pattern: re.Pattern[str], what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid {what}")
        return value

    return check


_user_name = _matching(
    re.compile(r"[a-z_][a-z0-9_-]{0,31}"),
    "user name: lower-case letters, digits, '_' and '-', starting with a letter or '_', "
    "at most 32 characters",
)
_dns_label = _matching(
    re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"),
    "name: lower-case letters, digits and '-', at most 63 characters, starting and ending "
    "with a letter or digit",
)
_identifier = _matching(
    re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"),
    "name: letters, digits, '_', '.' and '-', at most 63 characters",
)


def _glob(value: str) -> str:
    compile_glob(value)
    return value


def _pinned_image(value: str) -> str:
    return str(parse_pinned_image(value))


def _selector(value: Any) -> LabelSelector:
    if isinstance(value, LabelSelector):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a label selector string such as 'app=web,tier in (api)'")
    try:
        return parse_selector(value)
    except SelectorError as exc:
        raise ValueError(str(exc)) from None


def _public_key(value: Any) -> PublicKey:
    if isinstance(value, PublicKey):
        return value
    if not isinstance(value, str):
        raise ValueError("expected an OpenSSH public key line (ssh-ed25519 AAAA... comment)")
    return parse_public_key(value)


def _https_url(value: str) -> str:
    if not value.startswith("https://"):
        raise ValueError(
            f"{value!r} must be an https:// URL: the bastion refuses plain HTTP to its backends"
        )
    if len(value) <= len("https://") or "/" in value[len("https://") :].split("/", 1)[0]:
        raise ValueError(f"{value!r} has no host name")
    return value.rstrip("/")


def _ip_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address (e.g. 0.0.0.0 or 127.0.0.1)") from None
    return value


def _ip_network(value: str) -> str:
    try:
        network = ipaddress.ip_network(value)
    except ValueError as exc:
        if "host bits set" in str(exc):
            fixed = ipaddress.ip_network(value, strict=False)
            raise ValueError(f"{value!r} has host bits set: write {fixed}") from None
        raise ValueError(
            f"{value!r} is not an IP address or network (e.g. 10.0.0.5 or 10.0.0.0/24)"
        ) from None
    return str(network)


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("expected a time with a time zone, e.g. 2026-12-01T00:00:00Z")
    return value


ConfigPath = Annotated[Path, AfterValidator(_resolve)]
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
UserName = Annotated[str, AfterValidator(_user_name)]
DnsLabel = Annotated[str, AfterValidator(_dns_label)]
Identifier = Annotated[str, AfterValidator(_identifier)]
Glob = Annotated[str, AfterValidator(_glob)]
PinnedImage = Annotated[str, AfterValidator(_pinned_image)]
Selector = Annotated[LabelSelector, BeforeValidator(_selector)]
SshPublicKey = Annotated[PublicKey, BeforeValidator(_public_key)]
HttpsUrl = Annotated[str, AfterValidator(_https_url)]
IpAddress = Annotated[str, AfterValidator(_ip_address)]
IpNetwork = Annotated[str, AfterValidator(_ip_network)]
AwareTime = Annotated[datetime, AfterValidator(_aware)]
PathPrefix = Annotated[str, AfterValidator(check_prefix)]


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=False, arbitrary_types_allowed=True
    )


def _duration_between(low: timedelta, high: timedelta) -> Callable[[timedelta], timedelta]:
    def check(value: timedelta) -> timedelta:
        if not low <= value <= high:
            raise ValueError(
                f"expected a duration from {format_duration(low)} to {format_duration(high)}"
            )
        return value

    return check


# Long enough for a load balancer under load, short enough that connections holding a slot
# without a header are gone soon.
_proxy_header_timeout = _duration_between(timedelta(seconds=1), timedelta(seconds=60))


class ProxyProtocol(_Strict):
    """PROXY protocol (v1 or v2) from these load balancers (docs/front-door.md)."""

    # Peers whose headers are believed, and from which a header is required.
    trusted: list[IpNetwork] = Field(min_length=1)
    timeout: Annotated[Duration, AfterValidator(_proxy_header_timeout)] = timedelta(seconds=5)


class Listener(_Strict):
    address: IpAddress
    port: int = Field(2222, ge=0, le=65535)
    host_key: ConfigPath
    workers: int | None = Field(None, ge=1, le=64)
    # asyncssh's chacha20-poly1305 costs ~1.7x the CPU of AES-GCM per byte, and OpenSSH
    # clients pick it whenever it is offered: off unless an administrator wants it.
    allow_chacha20: bool = False
    # Consoles forked from a pre-warmed template process (bastion/ssh/zygote.py) instead of
    # a fresh interpreter per login: about 80 ms and 15 MB each instead of 250 ms and 27 MB.
    console_zygote: bool = True
    # What a login gets: the Textual console, or the line console (a prompt taking
    # ``debug NAMESPACE/POD``) for operators whose terminals cannot show a full-screen app.
    console: Literal["textual", "line"] = "textual"
    # Behind a TCP load balancer: None (the default) takes every peer's address as it is.
    proxy_protocol: ProxyProtocol | None = None


class User(_Strict):
    name: UserName
    public_keys: list[SshPublicKey] = Field(min_length=1)
    groups: list[Identifier] = []
    # None: the seed lives at <paths.state_dir>/totp/<name> (see Config.totp_secret_path),
    # and a missing file there means "not enrolled yet".
    totp_secret_file: ConfigPath | None = None
    break_glass: bool = False


class Cluster(_Strict):
    name: DnsLabel
    api_url: HttpsUrl
    ca_file: ConfigPath
    vault_mount: Identifier
    # The console's read-only view (lists, details, events): a Vault role of type ClusterRole
    # whose rules are bastion.kube_permissions.BROWSE_RULES. None: the console cannot list
    # this cluster (``debug NAMESPACE/POD`` still works).
    browse_vault_role: Identifier | None = None
    # Where Vault creates the browse service accounts: the role must allow this namespace.
    browse_account_namespace: DnsLabel = "default"


class Approvers(_Strict):
    users: list[UserName] = []
    groups: list[Identifier] = []

    @model_validator(mode="after")
    def _someone(self) -> Approvers:
        if not self.users and not self.groups:
            raise ValueError("approvers names nobody: list at least one user or group")
        return self


# A request must live long enough to be seen and decided; a day is a standing permission
# rather than a four-eyes check. Seconds are allowed for tests of expiry.
_approval_expiry = _duration_between(timedelta(seconds=5), timedelta(hours=24))


class Approval(_Strict):
    """A grant's four-eyes rule (docs/approvals.md)."""

    required: bool = True  # false keeps the section but switches it off
    approvers: Approvers
    # A request nobody decides, and then an approval nobody uses, lapses after this.
    expires_after: Annotated[Duration, AfterValidator(_approval_expiry)] = DEFAULT_EXPIRY
    # The approved shell starts only while an auditor watches it (docs/oversight.md).
    moderated: bool = False

    def rule(self) -> ApprovalRule | None:
        """The policy engine's view; None when switched off."""
        if not self.required:
            return None
        approvers = PolicyApprovers(
            frozenset(self.approvers.users), frozenset(self.approvers.groups)
        )
        return ApprovalRule(approvers, self.expires_after)


class Grant(_Strict):
    name: Identifier
    users: list[UserName] = []
    groups: list[Identifier] = []
    clusters: list[Glob] = Field(min_length=1)
    namespaces: list[Glob] = Field(min_length=1)
    pod_selector: Selector = LabelSelector()
    modes: list[Mode] = Field(default=[Mode.EPHEMERAL], min_length=1)
    images: list[PinnedImage] = Field(min_length=1)
    max_session: Duration = timedelta(hours=1)
    idle_timeout: Duration = timedelta(minutes=15)
    reason_required: bool = False
    record_input: bool = False
    vault_role: Identifier
    not_before: AwareTime | None = None
    not_after: AwareTime | None = None
    approval: Approval | None = None
    # What its holders may do: the shell and/or read-only views (docs/introspection.md).
    scopes: list[Scope] = Field(default=[Scope.SHELL], min_length=1)
    # Where the files view may list, in the target container's filesystem.
    path_prefixes: list[PathPrefix] = []

    @model_validator(mode="after")
    def _coherent(self) -> Grant:
        if not self.users and not self.groups:
            raise ValueError("a grant must name at least one of 'users' or 'groups'")
        if len(set(self.scopes)) != len(self.scopes):
            raise ValueError("'scopes' names a scope twice: list each once")
        if Scope.FILES in self.scopes and not self.path_prefixes:
            raise ValueError(
                "scope 'files' needs 'path_prefixes': the directories it may list, e.g. [/etc]"
            )
        if self.path_prefixes and Scope.FILES not in self.scopes:
            raise ValueError("'path_prefixes' is only for scope 'files': add it or remove them")
        if self.idle_timeout > self.max_session:
            raise ValueError("idle_timeout cannot be longer than max_session")
        if self.not_before and self.not_after and self.not_after <= self.not_before:
            raise ValueError("not_after must be later than not_before")
        return self


class AppRole(_Strict):
    role_id: str = Field(min_length=1)
    secret_id_file: ConfigPath


class TlsClient(_Strict):
    """Login with a TLS client certificate (Vault's ``cert`` auth method, mutual TLS)."""

    cert_file: ConfigPath  # PEM certificate (may be followed by its intermediates)
    key_file: ConfigPath  # its private key: a secret file
    role: Identifier  # the cert auth role: ``name`` of auth/cert/login


class Vault(_Strict):
    address: HttpsUrl
    ca_file: ConfigPath
    # Exactly one of the two: how the bastion logs in to Vault.
    approle: AppRole | None = None
    tls_client: TlsClient | None = None
    timeout: Duration = timedelta(seconds=10)

    @model_validator(mode="after")
    def _one_login(self) -> Vault:
        if self.approle is not None and self.tls_client is not None:
            raise ValueError(
                "both 'approle' and 'tls_client' are set; the bastion logs in to Vault one "
                "way: keep exactly one of them"
            )
        if self.approle is None and self.tls_client is None:
            raise ValueError(
                "no login method: set 'approle' (role_id, secret_id_file) or 'tls_client' "
                "(cert_file, key_file, role) to say how the bastion logs in to Vault"
            )
        return self


class Paths(_Strict):
    state_dir: ConfigPath
    audit_log: ConfigPath
    recordings_dir: ConfigPath
    # One YAML file per user (<name>.yaml, the schema of one entry of ``users``), re-read by
    # the running server when it changes: ``bastion user add`` writes here.
    users_dir: ConfigPath | None = None


def _auditor_public_key(value: str) -> str:
    # Imported here: the key parser loads the crypto library, which only configs with a
    # recording section need.
    from bastion.recording.keys import parse_auditor_public_key  # noqa: PLC0415

    parse_auditor_public_key(value)
    return value.strip()


def _flush_interval(value: timedelta) -> timedelta:
    if not timedelta(seconds=1) <= value <= timedelta(seconds=60):
        raise ValueError("expected a duration from 1s to 60s")
    return value


class Recording(_Strict):
    # The auditors' X25519 public key, "x25519:<base64>" as `bastion recordings keygen`
    # prints it: recordings are encrypted to it; the private key never comes here.
    auditor_public_key: Annotated[str, AfterValidator(_auditor_public_key)]
    # How often a session's output is sealed, written and fsynced: what a crash can lose.
    flush_interval: Annotated[Duration, AfterValidator(_flush_interval)] = timedelta(seconds=1)


def _checkpoint_interval(value: timedelta) -> timedelta:
    if not timedelta(seconds=1) <= value <= timedelta(hours=1):
        raise ValueError("expected a duration from 1s to 1h")
    return value


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    bare = host[1:-1] if bracketed else host
    if (
        not sep
        or not bare
        or not port.isdigit()
        or not 1 <= int(port) <= 65535
        or (":" in bare and not bracketed)
        or any(c.isspace() or c in "/@" for c in bare)
    ):
        raise ValueError(
            f"{value!r} is not HOST:PORT (e.g. logs.example.com:6514, or [2001:db8::1]:6514)"
        )
    return value


class SyslogDestination(_Strict):
    # RFC 5424 messages over TLS (RFC 5425), octet-counted; 6514 is syslog-over-TLS's port.
    address: Annotated[str, AfterValidator(_host_port)]
    ca_file: ConfigPath  # the only CA trusted for the receiver's certificate

    def host_port(self) -> tuple[str, int]:
        host, _, port = self.address.rpartition(":")
        return host.strip("[]"), int(port)


class WebhookDestination(_Strict):
    url: HttpsUrl
    ca_file: ConfigPath  # the only CA trusted for the receiver's certificate
    # Optional secret file holding a token sent as "Authorization: Bearer <token>".
    token_file: ConfigPath | None = None


class Shipping(_Strict):
    # "checkpoints": the signed checkpoints only; "all": every line (checkpoints included).
    events: Literal["checkpoints", "all"] = "checkpoints"
    syslog: SyslogDestination | None = None
    webhook: WebhookDestination | None = None

    @model_validator(mode="after")
    def _somewhere(self) -> Shipping:
        if self.syslog is None and self.webhook is None:
            raise ValueError("'ship' needs a destination: set 'syslog', 'webhook' or both")
        return self


class Audit(_Strict):
    # A signed checkpoint after this many events, and at least every checkpoint_interval
    # while the bastion runs (even when nothing happens): see docs/audit.md.
    checkpoint_every: int = Field(1000, ge=1, le=1_000_000)
    checkpoint_interval: Annotated[Duration, AfterValidator(_checkpoint_interval)] = timedelta(
        seconds=60
    )
    ship: Shipping | None = None


def _max_key_age(value: timedelta) -> timedelta:
    if not timedelta(days=1) <= value <= timedelta(days=3650):
        raise ValueError("expected a duration from 1d to 3650d (the default is 365d)")
    return value


def _host_key_overlap(value: timedelta) -> timedelta:
    if not timedelta(minutes=1) <= value <= timedelta(days=90):
        raise ValueError("expected a duration from 1m to 90d (the default is 7d)")
    return value


class Keys(_Strict):
    # check-config warns about a key in use for longer than this (docs/keys.md).
    max_age: Annotated[Duration, AfterValidator(_max_key_age)] = timedelta(days=365)
    # How long `bastion keys rotate --kind host` offers the new host key next to the old
    # one, for clients to learn it (UpdateHostKeys), before the old one retires.
    host_key_overlap: Annotated[Duration, AfterValidator(_host_key_overlap)] = timedelta(days=7)


def _time_box(value: timedelta) -> timedelta:
    if not timedelta(seconds=5) <= value <= timedelta(hours=4):
        raise ValueError("expected a duration from 5s to 4h (the default is 30m)")
    return value


class BreakGlassGrant(_Strict):
    """What a break-glass session may debug: a grant's scope. It names nobody (the users
    marked ``break_glass`` get it, after their one-time code and a reason) and has no limits
    of its own: the section's time box is its limit, and input is always recorded."""

    clusters: list[Glob] = Field(min_length=1)
    namespaces: list[Glob] = Field(min_length=1)
    pod_selector: Selector = LabelSelector()
    modes: list[Mode] = Field(default=[Mode.EPHEMERAL], min_length=1)
    images: list[PinnedImage] = Field(min_length=1)
    vault_role: Identifier


class BreakGlassAlerts(_Strict):
    # Where every break-glass login and start is announced at once: a syslog message of
    # severity crit and/or an HTTPS POST of a JSON body (docs/break-glass.md).
    syslog: SyslogDestination | None = None
    webhook: WebhookDestination | None = None

    @model_validator(mode="after")
    def _somewhere(self) -> BreakGlassAlerts:
        if self.syslog is None and self.webhook is None:
            raise ValueError(
                "break-glass alerts need a destination: set 'syslog', 'webhook' or both"
            )
        return self


class BreakGlass(_Strict):
    grant: BreakGlassGrant
    # The time box, from the session's start: a hard end that nothing extends.
    max_session: Annotated[Duration, AfterValidator(_time_box)] = timedelta(minutes=30)
    idle_timeout: Duration = timedelta(minutes=10)
    # The reason asked before anything else: at least this many characters (and 3 words).
    min_reason_length: int = Field(20, ge=10, le=200)
    alerts: BreakGlassAlerts
    # A break-glass shell starts only while an auditor watches it (docs/oversight.md).
    moderated: bool = False

    @model_validator(mode="after")
    def _coherent(self) -> BreakGlass:
        if self.idle_timeout > self.max_session:
            raise ValueError("idle_timeout cannot be longer than max_session")
        return self

    def policy_grant(self) -> PolicyGrant:
        g = self.grant
        return PolicyGrant(
            name="break-glass",
            clusters=tuple(g.clusters),
            namespaces=tuple(g.namespaces),
            pod_selector=g.pod_selector,
            modes=frozenset(g.modes),
            images=frozenset(g.images),
            max_session=self.max_session,
            idle_timeout=self.idle_timeout,
            record_input=True,
            vault_role=g.vault_role,
            break_glass=True,
        )


def _watcher_wait(value: timedelta) -> timedelta:
    if not timedelta(seconds=5) <= value <= timedelta(hours=1):
        raise ValueError("expected a duration from 5s to 1h (the default is 10m)")
    return value


class Oversight(_Strict):
    """Who may list, watch and terminate live sessions (docs/oversight.md)."""

    auditors: Approvers
    # How long a moderated shell waits for a watcher before it is refused.
    watcher_wait: Annotated[Duration, AfterValidator(_watcher_wait)] = timedelta(minutes=10)


class Limits(_Strict):
    max_sessions: int = Field(100, ge=1)
    max_sessions_per_user: int = Field(3, ge=1)
    connections_per_source: int = Field(10, ge=1)
    connection_window: Duration = timedelta(seconds=10)
    max_unauthenticated: int = Field(50, ge=1)
    login_timeout: Duration = timedelta(seconds=30)
    session_open_timeout: Duration = timedelta(seconds=30)
    keepalive_interval: Duration = timedelta(seconds=30)
    code_attempts_per_connection: int = Field(3, ge=1, le=10)
    console_idle_timeout: Duration = timedelta(minutes=15)
    session_hard_limit: Duration = timedelta(hours=12)
    lockout_after_failures: int = Field(5, ge=1)
    hard_lock_after_failures: int = Field(20, ge=1)
    kubernetes_timeout: Duration = timedelta(seconds=10)
    # Pulling the toolbox image on a cold node takes longer than one API request.
    debug_start_timeout: Duration = timedelta(seconds=90)

    @model_validator(mode="after")
    def _ordered(self) -> Limits:
        if self.hard_lock_after_failures < self.lockout_after_failures:
            raise ValueError("hard_lock_after_failures must be at least lockout_after_failures")
        return self


class Config(_Strict):
    service_user: UserName | None = None
    listener: Listener
    users: list[User] = []
    clusters: list[Cluster] = Field(min_length=1)
    grants: list[Grant] = []
    vault: Vault
    paths: Paths
    limits: Limits = Field(default_factory=Limits)
    # None: no recording can be started, so nothing that must be recorded can start.
    recording: Recording | None = None
    audit: Audit = Field(default_factory=Audit)
    keys: Keys = Field(default_factory=Keys)
    # None: no account can break the glass (a user marked break_glass is a config error).
    break_glass: BreakGlass | None = None
    # None: nobody may watch sessions, and no shell may be moderated.
    oversight: Oversight | None = None
    # Where the shared state lives: SQLite files in paths.state_dir, or PostgreSQL.
    state: State = Field(default_factory=State)
    guard: Guard = Field(default_factory=Guard)

    # Each replica writes its own audit chain: a replica_id set in state names the log file.
    _replica_log = model_validator(mode="before")(with_replica_log_name)

    # Set by the loader: the file this config came from, and for each user read from
    # paths.users_dir, its file there (users of the config file itself are not listed).
    _source: Path | None = PrivateAttr(default=None)
    _user_files: dict[str, Path] = PrivateAttr(default_factory=dict)

    @property
    def source(self) -> Path | None:
        """The config file this was loaded from (None when built in memory)."""
        return self._source

    def user_file(self, name: str) -> Path | None:
        """The users_dir file user ``name`` came from; None for users of the config file."""
        return self._user_files.get(name)

    def totp_secret_path(self, user: User) -> Path:
        """Where ``user``'s TOTP seed lives: its totp_secret_file, or the default in state_dir."""
        if user.totp_secret_file is not None:
            return user.totp_secret_file
        return self.paths.state_dir / "totp" / user.name

    def state_stores(self) -> StateStores:
        """The state stores on the configured database (``state.url``)."""
        return StateStores(
            self.paths.state_dir,
            self.state.postgres,
            replica=self.state.replica_id,
            dead_after=self.state.replica_dead_after.total_seconds(),
        )

    def login_db_path(self) -> Path:
        """The SQLite database of the login guard (replay guard, failures, scratch codes)."""
        return self.paths.state_dir / "logins.db"

    def audit_hmac_key_path(self) -> Path:
        """The key that turns secrets into references in the audit log."""
        return self.paths.state_dir / "audit-hmac.key"

    def policy(self) -> Policy:
        """The pure policy engine's view of the grants."""
        return Policy(
            PolicyGrant(
                name=g.name,
                users=frozenset(g.users),
                groups=frozenset(g.groups),
                clusters=tuple(g.clusters),
                namespaces=tuple(g.namespaces),
                pod_selector=g.pod_selector,
                modes=frozenset(g.modes),
                images=frozenset(g.images),
                max_session=g.max_session,
                idle_timeout=g.idle_timeout,
                reason_required=g.reason_required,
                record_input=g.record_input,
                vault_role=g.vault_role,
                not_before=g.not_before,
                not_after=g.not_after,
                approval=g.approval.rule() if g.approval is not None else None,
                scopes=frozenset(g.scopes),
                path_prefixes=tuple(g.path_prefixes),
            )
            for g in self.grants
        ).with_grants([self.break_glass.policy_grant()] if self.break_glass else [])

    def cluster(self, name: str) -> Cluster | None:
        """The configured cluster called ``name``; None when there is none."""
        return next((c for c in self.clusters if c.name == name), None)

    def principal(self, name: str) -> Principal | None:
        """The policy's view of a configured user; None when there is no such user."""
        for user in self.users:
            if user.name == name:
                return Principal(user.name, frozenset(user.groups), user.break_glass)
        return None
