"""An optional Prometheus endpoint serving the numbers `gateway status` shows, read at each scrape."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from gateway.core import clock
from gateway.core.config import Config, ConfigError
from gateway.ops.status import collect
from gateway.store.database import Store, open_store

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
        if health.free_bytes is not None:
            # Alert on the trend before the store fills: at zero every message gets 451.
            values.append(
                ("gateway_storage_free_bytes", "free space where the store lives", health.free_bytes)
            )
            values.append(
                ("gateway_storage_min_free_bytes", "storage.min_free_mb, in bytes", health.min_free_bytes)
            )
        if health.last_write_error_at is not None:
            failed = clock.parse_iso(health.last_write_error_at).timestamp()
            values.append(
                ("gateway_last_write_error_timestamp_seconds", "when the store last failed a write", failed)
            )
        if health.last_fetch_at is not None:
            fetched = clock.parse_iso(health.last_fetch_at).timestamp()
            values.append(
                ("gateway_imap_last_fetch_timestamp_seconds", "when IMAP last took a message", fetched)
            )
        for name, text, value in values:
            yield GaugeMetricFamily(name, text, value=value)


def intake_of(source: str) -> str:
    """smtp, pipe, imap or replay: the way a message came in, without the replayed one's origin."""
    return "replay" if source.startswith("replay:") else source


class TrafficCollector:
    """Counters read from the store, so mail taken by `gateway deliver` or a worker process counts too.

    Messages are counted from the last id seen at each scrape (the table only grows: a purge
    empties rows, never deletes them); the outbox, whose rows change state, is summed whole.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.seen_upto = 0
        self.messages: Counter[tuple[str, str]] = Counter()

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        with self.lock:
            store = open_store(self.config.storage)
            try:
                outbox = self._read(store)
                quarantined = store.query("SELECT source, count(*) AS n FROM quarantine GROUP BY source")
            finally:
                store.close()
            by_outcome = Counter(self.messages)
        for row in quarantined:
            by_outcome[(intake_of(row["source"]), "quarantined")] += row["n"]
        messages = CounterMetricFamily(
            "gateway_messages", "messages taken in, by intake and outcome", labels=("intake", "outcome")
        )
        for (intake, outcome), count in sorted(by_outcome.items()):
            messages.add_metric([intake, outcome], count)
        yield messages
        sent = CounterMetricFamily("gateway_outbox_sent", "outgoing mail the relay took")
        sent.add_metric([], outbox["sent"])
        yield sent
        deferred = CounterMetricFamily("gateway_outbox_deferred", "delivery attempts put off (4xx, no relay)")
        deferred.add_metric([], outbox["deferred"])
        yield deferred
        failed = CounterMetricFamily("gateway_outbox_failed", "outgoing mail refused for good (5xx)")
        failed.add_metric([], outbox["failed"])
        yield failed

    def _read(self, store: Store) -> dict[str, int]:
        for row in store.query(
            "SELECT source, disposition, count(*) AS n, max(id) AS top FROM messages"
            " WHERE id > ? AND direction = 'in' GROUP BY source, disposition",
            (self.seen_upto,),
        ):
            self.messages[(intake_of(row["source"]), row["disposition"])] += row["n"]
            self.seen_upto = max(self.seen_upto, row["top"])
        totals = {"sent": 0, "failed": 0, "deferred": 0}
        for row in store.query(
            "SELECT status, count(*) AS n, sum(attempts) AS tries FROM outbox GROUP BY status"
        ):
            if row["status"] in ("sent", "failed"):
                totals[row["status"]] = row["n"]
                # Every attempt but the last one of a sent or failed mail was put off.
                totals["deferred"] += (row["tries"] or 0) - row["n"]
            else:
                totals["deferred"] += row["tries"] or 0
        totals["deferred"] = max(totals["deferred"], 0)
        return totals


class MetricsEndpoint:
    """The HTTP server `gateway serve` starts when `[metrics] port` is not 0."""

    def __init__(self, config: Config) -> None:
        try:
            from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
        except ImportError:
            raise ConfigError(
                "metrics.port: needs prometheus-client (pip install 'gateway[metrics]')"
            ) from None
        registry = CollectorRegistry(auto_describe=False)
        registry.register(StatusCollector(config))
        registry.register(TrafficCollector(config))
        # The process's own figures: memory, CPU time, open files against LimitNOFILE.
        ProcessCollector(registry=registry)
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
