"""The sections of the configuration file as typed values, each with its defaults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
    # Local time on working days (Monday-Friday minus Norwegian holidays); rules, receipts and targets.
    opening_hours: str = "08:00-15:30"
    # The 24/7 number for critical matters, named in every receipt (empty: service.phone), and the
    # key a caller presses outside opening hours to reach the on-call (empty: none to press).
    critical_phone: str = ""
    critical_phone_key: str = ""
    # Guides linked where a receipt asks for missing information; empty leaves the link out.
    escalation_guide_url: str = ""
    troubleshooting_guide_url: str = ""
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
    # Time one message's text analysis (escalation fields) may take before the transaction; past
    # it the case is stored without it and its history says "analysis skipped".
    analysis_seconds: float = 1.0

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]

    @property
    def critical_line(self) -> str:
        """The number customers call for critical matters, around the clock."""
        return self.critical_phone or self.phone


@dataclass(frozen=True)
class StorageConfig:
    path: Path = Path("var")
    # How long a write waits for another process's lock before we answer "try later".
    busy_timeout_ms: int = 10000
    # Litestream streams the store: the gateway leaves WAL checkpoints to it (docs/two-nodes.md).
    replica: bool = False
    # `gateway status` exits 1 when the filesystem of `path` has less free space than this.
    min_free_mb: int = 200

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
    # An incident still down this long after NAV's first alert is announced to the customer;
    # one that comes back up sooner (flapping) is not.
    notify_after_minutes: int = 5


@dataclass(frozen=True)
class ReplicaConfig:
    # Litestream's file replica (the directory its litestream.yml names), read by `gateway status`
    # for the replication lag; empty for a replica it cannot read (S3: see docs/two-nodes.md).
    path: str = ""
    # `gateway status` exits 1 when the replica is further behind the store than this.
    max_lag_seconds: int = 60
