"""An optional Prometheus endpoint serving the numbers `gateway status` shows, read at each scrape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from gateway.core import clock
from gateway.core.config import Config, ConfigError
from gateway.ops.status import collect

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric


class StatusCollector:
    """A custom collector: every scrape asks the store, so the numbers hold across restarts."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        health = collect(self.config)
        values: list[tuple[str, str, float | None]] = [
            ("gateway_healthy", "1 when nothing needs a person (see gateway status)", float(health.healthy)),
            ("gateway_listener_up", "1 when the SMTP listener answers", float(health.listener_up)),
            ("gateway_outbox_queued", "outgoing mail waiting to be sent", health.outbox_queued),
            (
                "gateway_outbox_oldest_queued_age_seconds",
                "age of the oldest queued outgoing mail",
                health.outbox_oldest_queued_age_seconds or 0.0,
            ),
            (
                "gateway_outbox_failed_24h",
                "deliveries failed in the last 24 hours",
                health.failed_deliveries_24h,
            ),
            (
                "gateway_quarantine_unreplayed",
                "quarantined messages not replayed",
                health.quarantine_unreplayed,
            ),
            ("gateway_held_messages", "messages held for an agent", health.held),
            ("gateway_database_bytes", "size of the SQLite database and its WAL", health.database_bytes),
        ]
        if health.last_fetch_at is not None:
            fetched = clock.parse_iso(health.last_fetch_at).timestamp()
            values.append(
                ("gateway_imap_last_fetch_timestamp_seconds", "when IMAP last took a message", fetched)
            )
        for name, text, value in values:
            yield GaugeMetricFamily(name, text, value=value)


class MetricsEndpoint:
    """The HTTP server `gateway serve` starts when `[metrics] port` is not 0."""

    def __init__(self, config: Config) -> None:
        try:
            from prometheus_client import CollectorRegistry, start_http_server
        except ImportError:
            raise ConfigError(
                "metrics.port: needs prometheus-client (pip install 'gateway[metrics]')"
            ) from None
        registry = CollectorRegistry(auto_describe=False)
        registry.register(StatusCollector(config))
        metrics = config.metrics
        try:
            self.server, self.thread = start_http_server(metrics.port, addr=metrics.host, registry=registry)
        except OSError as exc:
            raise ConfigError(
                f"metrics.port: cannot listen on {metrics.host}:{metrics.port} ({exc})"
            ) from None

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
