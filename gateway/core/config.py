"""The gateway's TOML configuration: one file, validated up front, errors name the key."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from ipaddress import ip_network
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.core.addresses import AddressError, normalise_address
from gateway.core.shipped import shipped_dir

DEFAULT_PATH = "gateway.toml"
LANGUAGES = ("nb", "en")


class ConfigError(Exception):
    """A configuration problem, worded as one line that names the offending key."""


@dataclass(frozen=True)
class ServiceConfig:
    address: str = "kontakt@service.example"
    name: str = "Servicesenteret"
    case_prefix: str = "SSC"
    language: str = "nb"
    timezone: str = "Europe/Oslo"
    phone: str = ""
    # Receipts per sender per hour before we stop answering (loop brake).
    receipt_limit_per_hour: int = 5
    # Confirmation codes per address per hour: their own budget, so receipts cannot use it up.
    confirmation_limit_per_hour: int = 10
    on_call_address: str = ""
    second_line_address: str = ""
    supplier_shop_url: str = ""
    # Key for the HMAC in per-case reply addresses; generated and kept in the store when empty.
    secret: str = ""
    # A customer's reply to a case closed longer ago than this opens a new, linked case.
    reopen_days: int = 14
    # Resolved cases close by themselves after this many days without news.
    autoclose_days: int = 7

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


@dataclass(frozen=True)
class StorageConfig:
    path: Path = Path("var")
    # How long a write waits for another process's lock before we answer "try later".
    busy_timeout_ms: int = 10000
    # Litestream streams the store: the gateway leaves WAL checkpoints to it (docs/two-nodes.md).
    replica: bool = False

    @property
    def database(self) -> Path:
        return self.path / "gateway.db"

    @property
    def outgoing(self) -> Path:
        return self.path / "outgoing"


@dataclass(frozen=True)
class SmtpConfig:
    host: str = "127.0.0.1"
    port: int = 2525
    max_message_size: int = 26214400
    # Run the pipeline for SMTP mail in a worker process beside the listener (two cores instead of
    # one). false keeps it in the listener's process: for a one-core box, or to debug in-process.
    intake_process: bool = True
    # A client silent this long between commands (or between chunks of DATA) is hung up on with
    # 421; RFC 5321 4.5.3.2 asks for at least five minutes.
    idle_timeout_seconds: float = 300.0
    # Connections open at once, and from one client address; more are answered 421 and closed,
    # so silent connections cannot use up serve's file descriptors (LimitNOFILE in the unit).
    max_connections: int = 200
    max_connections_per_client: int = 20
    # Message bytes held by the listener at once; past it new DATA is answered 451 until
    # messages being stored free their share. At least max_message_size.
    max_bytes_in_flight: int = 33554432


@dataclass(frozen=True)
class RelayConfig:
    host: str = "127.0.0.1"
    port: int = 25
    timeout: float = 30.0
    # Backoff for a relay that is down or answers 4xx: first delay, doubling, capped.
    retry_initial_seconds: float = 60.0
    retry_max_seconds: float = 3600.0
    max_attempts: int = 20


@dataclass(frozen=True)
class AuthConfig:
    # The authserv-id our own MTA writes in Authentication-Results; all others are ignored.
    authserv_id: str = ""
    # On SMTP intake we are the MTA, so we check DKIM signatures ourselves.
    verify_dkim: bool = True
    # Mail from an agent's address counts as the agent's only when it authenticates.
    require_for_agents: bool = True
    # Test-only: a zone file of `selector._domainkey.domain TXT "..."` lines used instead of DNS.
    dkim_keys_file: str = ""


@dataclass(frozen=True)
class Target:
    """Service-level targets for one priority, counted in opening hours unless around the clock."""

    first_response_minutes: int = 240
    resolution_hours: float = 40.0
    around_the_clock: bool = False


# Defaults per priority; critical requests are accepted 24/7, so their clock never stops.
DEFAULT_TARGETS: dict[str, Target] = {
    "critical": Target(first_response_minutes=30, resolution_hours=4.0, around_the_clock=True),
    "high": Target(first_response_minutes=60, resolution_hours=8.0),
    "normal": Target(first_response_minutes=240, resolution_hours=40.0),
    "low": Target(first_response_minutes=480, resolution_hours=80.0),
}


@dataclass(frozen=True)
class Targets:
    critical: Target = DEFAULT_TARGETS["critical"]
    high: Target = DEFAULT_TARGETS["high"]
    normal: Target = DEFAULT_TARGETS["normal"]
    low: Target = DEFAULT_TARGETS["low"]

    def for_priority(self, priority: str) -> Target:
        # An unknown priority (a rule typo) is held to the normal targets, not to none.
        by_name = {"critical": self.critical, "high": self.high, "normal": self.normal, "low": self.low}
        return by_name.get(priority, self.normal)


@dataclass(frozen=True)
class RegistryConfig:
    file: Path = Path("data/contacts.toml")


@dataclass(frozen=True)
class ImapConfig:
    host: str = "127.0.0.1"
    port: int = 993
    ssl: str = "implicit"  # implicit | starttls | none
    # PEM file of CA certificates to trust instead of the system's (a server with an internal CA).
    ca_file: str = ""
    username: str = ""
    password: str = ""
    password_file: str = ""
    folder: str = "INBOX"
    processed_folder: str = "Processed"
    failed_folder: str = "Failed"
    poll_seconds: float = 60.0
    idle: bool = True
    timeout: float = 60.0
    batch_size: int = 200

    def secret(self) -> str:
        if self.password_file:
            return Path(self.password_file).read_text(encoding="utf-8").strip()
        return self.password


@dataclass(frozen=True)
class LogConfig:
    format: str = "text"  # text | json: one line per message either way
    level: str = "INFO"


@dataclass(frozen=True)
class MetricsConfig:
    # Port 0 keeps the Prometheus endpoint off; `gateway serve` starts it otherwise.
    port: int = 0
    host: str = "127.0.0.1"


@dataclass(frozen=True)
class RetentionConfig:
    # Raw mail and closed cases hold personal data (addresses, what people wrote): keep it no longer.
    raw_mail_days: int = 365
    closed_case_days: int = 730


@dataclass(frozen=True)
class MonitoringConfig:
    # Addresses NAV mails from. When set, NAV headers from anyone else are ordinary (untrusted) mail,
    # so a forged "Box is down" cannot open incidents.
    senders: tuple[str, ...] = ()
    # A dedicated SMTP intake for NAV: alerts sent to this address from these client addresses
    # (IPs or networks) count as proven without DKIM. Both or neither.
    recipient: str = ""
    client_addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReplicaConfig:
    # Litestream's file replica (the directory its litestream.yml names), read by `gateway status`
    # for the replication lag; empty for a replica it cannot read (S3: see docs/two-nodes.md).
    path: str = ""
    # `gateway status` exits 1 when the replica is further behind the store than this.
    max_lag_seconds: int = 60


@dataclass(frozen=True)
class Config:
    service: ServiceConfig = field(default_factory=ServiceConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    relay: RelayConfig | None = None
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    imap: ImapConfig | None = None
    targets: Targets = field(default_factory=Targets)
    auth: AuthConfig = field(default_factory=AuthConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    replica: ReplicaConfig | None = None
    rules_dir: Path = Path("rules")
    templates_dir: Path = Path("templates")
    source: Path | None = None


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table")
    return value


def _build(cls: type[Any], section: str, values: dict[str, Any]) -> Any:
    """Instantiate a section dataclass, checking every key's name and type."""
    defaults = cls()
    known = {f for f in defaults.__dataclass_fields__}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{section}.{key}: unknown key")
        expected = getattr(defaults, key)
        if isinstance(expected, Path):
            if not isinstance(value, str):
                raise ConfigError(f"{section}.{key}: expected a path string, got {value!r}")
            value = Path(value)
        elif isinstance(expected, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{section}.{key}: expected true or false, got {value!r}")
        elif isinstance(expected, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{section}.{key}: expected a number, got {value!r}")
            value = float(value)
        elif isinstance(expected, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{section}.{key}: expected an integer, got {value!r}")
        elif isinstance(expected, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{section}.{key}: expected a list of strings, got {value!r}")
            value = tuple(value)
        elif isinstance(expected, str) and not isinstance(value, str):
            raise ConfigError(f"{section}.{key}: expected a string, got {value!r}")
        kwargs[key] = value
    return cls(**kwargs)


def _check_service(service: ServiceConfig) -> None:
    for key in ("address", "on_call_address", "second_line_address"):
        value = getattr(service, key)
        if key != "address" and not value:
            continue
        try:
            normalise_address(value)
        except AddressError as exc:
            raise ConfigError(f"service.{key}: {exc}") from None
    if service.language not in LANGUAGES:
        raise ConfigError(f"service.language: must be one of {', '.join(LANGUAGES)}")
    if not service.case_prefix.isalnum():
        raise ConfigError("service.case_prefix: letters and digits only")
    try:
        ZoneInfo(service.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"service.timezone: unknown time zone {service.timezone!r}") from None
    for key in ("receipt_limit_per_hour", "confirmation_limit_per_hour"):
        if getattr(service, key) < 1:
            raise ConfigError(f"service.{key}: must be at least 1")


def _check_ports(smtp: SmtpConfig, relay: RelayConfig | None) -> None:
    for section, port in (("smtp", smtp.port), ("relay", relay.port if relay else 1)):
        if not 0 <= port <= 65535:
            raise ConfigError(f"{section}.port: {port} is not a TCP port")
    if smtp.max_message_size < 1024:
        raise ConfigError("smtp.max_message_size: must be at least 1024 bytes")
    if smtp.idle_timeout_seconds <= 0:
        raise ConfigError("smtp.idle_timeout_seconds: must be more than 0")
    for key in ("max_connections", "max_connections_per_client"):
        if getattr(smtp, key) < 1:
            raise ConfigError(f"smtp.{key}: must be at least 1")
    if smtp.max_connections_per_client > smtp.max_connections:
        raise ConfigError("smtp.max_connections_per_client: must not be more than smtp.max_connections")
    if smtp.max_bytes_in_flight < smtp.max_message_size:
        raise ConfigError("smtp.max_bytes_in_flight: must be at least smtp.max_message_size")


def _targets(section: dict[str, Any]) -> Targets:
    """[targets] maps a priority to a table; keys left out keep that priority's default."""
    chosen: dict[str, Target] = {}
    for priority, values in section.items():
        if priority not in DEFAULT_TARGETS:
            raise ConfigError(f"targets.{priority}: unknown priority (known: {', '.join(DEFAULT_TARGETS)})")
        if not isinstance(values, dict):
            raise ConfigError(f"targets.{priority}: must be a table")
        checked = _build(Target, f"targets.{priority}", values)
        target = replace(DEFAULT_TARGETS[priority], **{k: getattr(checked, k) for k in values})
        if target.first_response_minutes < 1 or target.resolution_hours <= 0:
            raise ConfigError(f"targets.{priority}: targets must be positive")
        chosen[priority] = target
    return Targets(**chosen)


def _operations(data: dict[str, Any]) -> dict[str, Any]:
    """[log], [metrics] and [retention]: how the gateway is run and what it keeps."""
    log = _build(LogConfig, "log", _section(data, "log"))
    if log.format not in ("text", "json"):
        raise ConfigError("log.format: must be text or json")
    if log.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("log.level: must be DEBUG, INFO, WARNING or ERROR")
    metrics = _build(MetricsConfig, "metrics", _section(data, "metrics"))
    if not 0 <= metrics.port <= 65535:
        raise ConfigError(f"metrics.port: {metrics.port} is not a TCP port")
    retention = _build(RetentionConfig, "retention", _section(data, "retention"))
    for key in ("raw_mail_days", "closed_case_days"):
        if getattr(retention, key) < 1:
            raise ConfigError(f"retention.{key}: must be at least 1")
    return {"log": log, "metrics": metrics, "retention": retention}


def _monitoring(data: dict[str, Any]) -> MonitoringConfig:
    monitoring: MonitoringConfig = _build(MonitoringConfig, "monitoring", _section(data, "monitoring"))
    key = "monitoring.senders"
    try:
        senders = tuple(normalise_address(s) for s in monitoring.senders)
        key = "monitoring.recipient"
        recipient = normalise_address(monitoring.recipient) if monitoring.recipient else ""
    except AddressError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    for network in monitoring.client_addresses:
        try:
            ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(f"monitoring.client_addresses: not an IP or network: {network!r}") from None
    if bool(recipient) != bool(monitoring.client_addresses):
        raise ConfigError("monitoring.recipient: set together with monitoring.client_addresses, or neither")
    return replace(monitoring, senders=senders, recipient=recipient)


def _auth(section: dict[str, Any], base: Path) -> AuthConfig:
    auth: AuthConfig = _build(AuthConfig, "auth", section)
    keys = base / auth.dkim_keys_file  # an absolute path stays as it is
    if auth.dkim_keys_file and not keys.is_file():
        raise ConfigError(f"auth.dkim_keys_file: no such file: {keys}")
    return replace(auth, dkim_keys_file=str(keys) if auth.dkim_keys_file else "")


def _replica(data: dict[str, Any], rooted: Callable[[Path], Path]) -> ReplicaConfig | None:
    """[replica]: Litestream streams the store; its presence alone leaves checkpoints to Litestream."""
    if "replica" not in data:
        return None
    replica: ReplicaConfig = _build(ReplicaConfig, "replica", _section(data, "replica"))
    if replica.max_lag_seconds < 1:
        raise ConfigError("replica.max_lag_seconds: must be at least 1")
    return replace(replica, path=str(rooted(Path(replica.path)))) if replica.path else replica


def parse_config(data: dict[str, Any], base: Path, source: Path | None = None) -> Config:
    """Turn TOML data into a Config; relative paths are taken from `base`."""
    known = {"service", "storage", "smtp", "relay", "registry", "imap", "paths", "auth", "targets"}
    known |= {"log", "metrics", "retention", "monitoring", "replica"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{key}: unknown section")
    service = _build(ServiceConfig, "service", _section(data, "service"))
    storage = _build(StorageConfig, "storage", _section(data, "storage"))
    smtp = _build(SmtpConfig, "smtp", _section(data, "smtp"))
    relay = _build(RelayConfig, "relay", _section(data, "relay")) if "relay" in data else None
    registry = _build(RegistryConfig, "registry", _section(data, "registry"))
    imap = _build(ImapConfig, "imap", _section(data, "imap")) if "imap" in data else None
    if imap is not None and imap.ssl not in ("implicit", "starttls", "none"):
        raise ConfigError("imap.ssl: must be implicit, starttls or none")
    if imap is not None and imap.ca_file and not Path(imap.ca_file).is_file():
        raise ConfigError(f"imap.ca_file: no such file: {imap.ca_file}")
    paths = _section(data, "paths")
    for key in paths:
        if key not in ("rules", "templates"):
            raise ConfigError(f"paths.{key}: unknown key")
    _check_service(service)
    _check_ports(smtp, relay)

    def rooted(p: Path) -> Path:
        return p if p.is_absolute() else base / p

    replica = _replica(data, rooted)
    if (storage.replica or replica is not None) and storage.busy_timeout_ms < 5000:
        # Litestream takes short write locks to checkpoint; its docs ask writers to wait 5 s.
        raise ConfigError("storage.busy_timeout_ms: at least 5000 when Litestream streams the store")

    return Config(
        service=service,
        storage=replace(storage, path=rooted(storage.path), replica=storage.replica or replica is not None),
        smtp=smtp,
        relay=relay,
        registry=RegistryConfig(file=rooted(registry.file)),
        imap=replace(imap, password_file=str(rooted(Path(imap.password_file))))
        if imap is not None and imap.password_file
        else imap,
        targets=_targets(_section(data, "targets")),
        auth=_auth(_section(data, "auth"), base),
        **_operations(data),
        monitoring=_monitoring(data),
        replica=replica,
        rules_dir=_folder(paths, "rules", rooted),
        templates_dir=_folder(paths, "templates", rooted),
        source=source,
    )


def _folder(paths: dict[str, Any], key: str, rooted: Callable[[Path], Path]) -> Path:
    """paths.rules / paths.templates as given, else the ones shipped with the gateway; must exist."""
    if key in paths:
        folder = rooted(Path(paths[key]))
    else:
        shipped = shipped_dir(key)
        if shipped is None:
            raise ConfigError(f"paths.{key}: not set, and this gateway was installed without its {key}")
        folder = shipped
    if not folder.is_dir():
        raise ConfigError(f"paths.{key}: no such directory: {folder}")
    return folder


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read the config named on the command line, in GATEWAY_CONFIG, or ./gateway.toml."""
    chosen = Path(path or os.environ.get("GATEWAY_CONFIG") or DEFAULT_PATH)
    try:
        text = chosen.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{chosen}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{chosen}: cannot read ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{chosen}: not valid TOML ({exc})") from None
    # Paths in the file are relative to the file, so a unit or cron line can run from anywhere.
    return parse_config(data, chosen.resolve().parent, source=chosen)
