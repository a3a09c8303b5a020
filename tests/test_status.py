"""`gateway status` and the metrics endpoint tell a healthy gateway from one that needs a person."""

from __future__ import annotations

import json
import re
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time

from gateway.cli.main import main
from gateway.core import clock
from gateway.core.config import Config, ConfigError, load_config
from gateway.ops.lock import ServeLock
from gateway.ops.metrics import StatusCollector, TrafficCollector
from gateway.ops.server import Server
from gateway.ops.status import collect
from gateway.outbox.queue import Deliverer
from gateway.pipeline.process import process, quarantine
from gateway.runtime import Runtime
from gateway.store.database import open_store
from tests.support import RecordingRelay, free_port, mail, smtp_send, wait_for


def _status(
    config_path: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, dict[str, object]]:
    code = main(["--config", str(config_path), "status", "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


def test_running_gateway_is_healthy(
    config_path: Path, server: Server, relay: RecordingRelay, capsys: pytest.CaptureFixture[str]
) -> None:
    """With serve up, mail answered and the outbox drained, status exits 0 and reports the listener up."""
    assert smtp_send(server.listener.address[1], mail())[0] == 250
    wait_for(lambda: relay.to("kari.nordmann@nordby-skole.example"), what="receipt sent")
    code, report = _status(config_path, capsys)
    assert code == 0, report
    assert report["healthy"] is True and report["problems"] == []
    assert report["listener_up"] is True and report["serve_running"] is True
    assert report["outbox_queued"] == 0 and report["database_bytes"] > 0
    assert main(["--config", str(config_path), "status"]) == 0
    assert "gateway status: ok" in capsys.readouterr().out


def test_quarantine_and_old_outbox_need_a_person(
    config_path: Path, runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unreplayed quarantine entry and mail queued for over an hour make status exit 1, naming both."""
    with freeze_time(clock.now() - timedelta(hours=2)):
        assert process(runtime, mail(), "smtp").outcome == "opened"  # its receipt stays queued
    quarantine(runtime, mail(subject="Ødelagt"), "smtp", ValueError("parser gave up"))
    code, report = _status(config_path, capsys)
    assert code == 1
    assert report["healthy"] is False
    assert report["quarantine_unreplayed"] == 1 and report["outbox_queued"] >= 1
    problems = " | ".join(report["problems"])  # type: ignore[arg-type]
    assert "quarantined" in problems and "over 1 hour" in problems
    assert "listener" not in problems  # no serve is running, so a silent port is expected


def test_failed_delivery_and_dead_listener_need_a_person(
    config_path: Path, runtime: Runtime, relay: RecordingRelay
) -> None:
    """A delivery failed within 24 h, and a serve lock held while nothing answers the port, are problems."""
    process(runtime, mail(), "smtp")
    relay.errors.append("550 5.1.1 no such user")
    assert Deliverer(runtime.config, runtime.store).flush().failed == 1
    config = load_config(config_path)
    lock = ServeLock(config.storage.path)
    lock.acquire("a hung gateway serve")
    try:
        health = collect(config)
    finally:
        lock.release()
    assert health.failed_deliveries_24h == 1
    assert health.serve_running and not health.listener_up
    assert any("does not answer" in p for p in health.problems)
    assert any("delivery failure" in p for p in health.problems)
    assert any("does not answer" in p for p in collect(config, expect_listener=True).problems)


def test_metrics_endpoint_serves_the_status_numbers(tmp_path: Path, config_path: Path) -> None:
    """With [metrics] port set, serve exposes the same counters for Prometheus, and stops them with it."""
    port = free_port()
    config_path.write_text(config_path.read_text() + f"\n[metrics]\nport = {port}\n", encoding="utf-8")
    server = Server(load_config(config_path))
    server.start()
    try:
        smtp_send(server.listener.address[1], mail())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        server.stop()
    assert "gateway_listener_up 1.0" in text
    assert "gateway_quarantine_unreplayed 0.0" in text
    assert "gateway_healthy" in text and "gateway_outbox_queued" in text
    free = re.search(r"^gateway_storage_free_bytes (\S+)$", text, re.M)
    assert free is not None and float(free.group(1)) > 0
    wanted = re.search(r"^gateway_storage_min_free_bytes (\S+)$", text, re.M)
    assert wanted is not None and float(wanted.group(1)) == 200_000_000  # storage.min_free_mb's default


def _samples(collector: TrafficCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in collector.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def test_traffic_counters_by_intake_outcome_and_delivery(config: Config, runtime: Runtime) -> None:
    """Messages count by intake and outcome, outgoing mail as sent, deferred and failed, across scrapes."""
    collector = TrafficCollector(config)
    process(runtime, mail(), "pipe")
    process(runtime, mail(sender="Mona <mona@service.example>", subject="Hei"), "pipe")  # held
    process(runtime, mail(subject="Skriveren"), "smtp")
    first = _samples(collector)
    assert first[("gateway_messages_total", (("intake", "pipe"), ("outcome", "case")))] == 1
    assert first[("gateway_messages_total", (("intake", "pipe"), ("outcome", "held")))] == 1
    assert first[("gateway_messages_total", (("intake", "smtp"), ("outcome", "case")))] == 1
    assert first[("gateway_outbox_sent_total", ())] == 0
    ids = [r["id"] for r in runtime.store.query("SELECT id FROM outbox ORDER BY id")]
    assert len(ids) >= 3
    with runtime.store.write() as conn:
        conn.execute("UPDATE outbox SET status = 'sent', attempts = 3 WHERE id = ?", (ids[0],))
        conn.execute("UPDATE outbox SET status = 'failed', attempts = 2 WHERE id = ?", (ids[1],))
        conn.execute("UPDATE outbox SET attempts = 1 WHERE id = ?", (ids[2],))
        conn.execute(
            "INSERT INTO quarantine (sha256, source, error, created_at)"
            " SELECT sha256, 'replay:imap', 'boom', '2026-11-24T09:00:00Z' FROM raw_messages LIMIT 1"
        )
    process(runtime, mail(subject="Nettet igjen"), "imap")
    second = _samples(collector)
    assert second[("gateway_outbox_sent_total", ())] == 1
    assert second[("gateway_outbox_failed_total", ())] == 1
    assert second[("gateway_outbox_deferred_total", ())] == 2 + 1 + 1
    assert second[("gateway_messages_total", (("intake", "imap"), ("outcome", "case")))] == 1
    assert second[("gateway_messages_total", (("intake", "pipe"), ("outcome", "case")))] == 1
    assert second[("gateway_messages_total", (("intake", "replay"), ("outcome", "quarantined")))] == 1


def test_metrics_endpoint_has_traffic_and_process_figures(config_path: Path) -> None:
    """The endpoint serves the traffic counters and the process collector's figures."""
    port = free_port()
    config_path.write_text(config_path.read_text() + f"\n[metrics]\nport = {port}\n", encoding="utf-8")
    server = Server(load_config(config_path))
    server.start()
    try:
        smtp_send(server.listener.address[1], mail())
        wait_for(
            lambda: server.runtime.store.one("SELECT 1 FROM outbox WHERE status = 'sent'"), what="a sent mail"
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        server.stop()
    assert 'gateway_messages_total{intake="smtp",outcome="case"} 1.0' in text
    assert "gateway_outbox_sent_total" in text and "gateway_outbox_deferred_total" in text
    assert "process_open_fds" in text and "process_resident_memory_bytes" in text


def test_free_space_threshold_is_checked_and_validated(tmp_path: Path, config_path: Path) -> None:
    """A threshold above the disk's free space makes status name it; a negative threshold is refused, naming the key."""
    text = config_path.read_text(encoding="utf-8")
    config_path.write_text(
        text.replace("[storage]\n", "[storage]\nmin_free_mb = 1000000000\n"), encoding="utf-8"
    )
    config = load_config(config_path)
    open_store(config.storage).close()  # the store's folder, as on an installed gateway
    health = collect(config)
    assert health.free_bytes is not None and health.free_bytes < health.min_free_bytes
    assert any("storage.min_free_mb is 1000000000" in problem for problem in health.problems), health.problems
    gauges = {
        sample.name: sample.value for family in StatusCollector(config).collect() for sample in family.samples
    }
    assert gauges["gateway_healthy"] == 0.0
    assert 0 < gauges["gateway_storage_free_bytes"] < gauges["gateway_storage_min_free_bytes"]
    assert gauges["gateway_storage_min_free_bytes"] == 1_000_000_000 * 1_000_000
    config_path.write_text(text.replace("[storage]\n", "[storage]\nmin_free_mb = -1\n"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"storage\.min_free_mb"):
        load_config(config_path)
