"""The gateway's TOML configuration: one file, validated up front, errors name the key."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from ipaddress import ip_network
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.core.addresses import AddressError, normalise_address
from gateway.core.config_sections import (
    DEFAULT_TARGETS as DEFAULT_TARGETS,
)
from gateway.core.config_sections import (
    AuthConfig as AuthConfig,
)
from gateway.core.config_sections import (
    ConfigError as ConfigError,
)
from gateway.core.config_sections import (
    ImapConfig as ImapConfig,
)
from gateway.core.config_sections import (
    LogConfig as LogConfig,
)
from gateway.core.config_sections import (
    MetricsConfig as MetricsConfig,
)
from gateway.core.config_sections import (
    MonitoringConfig as MonitoringConfig,
)
from gateway.core.config_sections import (
    RegistryConfig as RegistryConfig,
)
from gateway.core.config_sections import (
    RelayConfig as RelayConfig,
)
from gateway.core.config_sections import (
    ReplicaConfig as ReplicaConfig,
)
from gateway.core.config_sections import (
    RetentionConfig as RetentionConfig,
)
from gateway.core.config_sections import (
    ServiceConfig as ServiceConfig,
)
from gateway.core.config_sections import (
    SmtpConfig as SmtpConfig,
)
from gateway.core.config_sections import (
    StorageConfig as StorageConfig,
)
from gateway.core.config_sections import (
    Target as Target,
)
from gateway.core.config_sections import (
    Targets as Targets,
)
from gateway.core.shipped import shipped_dir
from gateway.core.workdays import parse_opening_hours

# A link customers can click: a web address with a host and no blanks.
_WEB_LINK = re.compile(r"^https?://[^\s/]+\.[^\s]+$")

DEFAULT_PATH = "gateway.toml"
LANGUAGES = ("nb", "en")


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
    if service.analysis_seconds <= 0:
        raise ConfigError("service.analysis_seconds: must be more than 0")
    try:
        parse_opening_hours(service.opening_hours)
    except ValueError as exc:
        raise ConfigError(f"service.opening_hours: {exc}") from None
    for key in ("escalation_guide_url", "troubleshooting_guide_url"):
        url = getattr(service, key)
        if url and (not _WEB_LINK.match(url)):
            raise ConfigError(f"service.{key}: expected an http:// or https:// address, got {url!r}")
    if not re.fullmatch(r"[0-9*#]?", service.critical_phone_key):
        raise ConfigError("service.critical_phone_key: one phone key (0-9, * or #), or empty")


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
    if not 0 <= monitoring.notify_after_minutes <= 1440:
        raise ConfigError("monitoring.notify_after_minutes: must be between 0 and 1440 minutes")
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
    if storage.min_free_mb < 0:
        raise ConfigError("storage.min_free_mb: must be 0 or more (0: no free-space check)")
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
