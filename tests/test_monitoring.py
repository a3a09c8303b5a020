"""NAV alert mail: down opens an incident for the device's owner, up resolves it, nothing is ever answered."""

from __future__ import annotations

import functools
import itertools
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dkim
import pytest
from freezegun import freeze_time

from gateway.changes.plans import plan_change
from gateway.flow.context import Result
from gateway.ops.queries import show_case
from gateway.ops.server import Server
from gateway.pipeline.process import process
from gateway.runtime import Runtime
from tests.support import RecordingRelay, dkim_keypair, mail, smtp_send, write_trusting_config

OSLO = ZoneInfo("Europe/Oslo")
_alert_ids = itertools.count(90210)
NAV_KEY = "nav._domainkey.noc.service.example"
MONITORING = '[monitoring]\nsenders = ["NAV@noc.service.example"]\n'


@functools.cache
def _nav_key() -> tuple[bytes, bytes]:
    return dkim_keypair()


@pytest.fixture
def config_path(tmp_path: Path, relay: RecordingRelay) -> Path:
    """NAV is the configured monitoring sender, and its alerts carry proof (see nav())."""
    return write_trusting_config(tmp_path, relay.port, {NAV_KEY: _nav_key()[1]}, MONITORING)


def _proven(raw: bytes) -> bytes:
    """NAV's mail system signs it (proof on SMTP); our MTA's verdict sits on top (proof on the pipe)."""
    signature = dkim.sign(
        raw,
        b"nav",
        b"noc.service.example",
        _nav_key()[0],
        include_headers=[b"from", b"subject", b"message-id"],
    )
    verdict = b"Authentication-Results: mx.service.example; dkim=pass header.d=noc.service.example\r\n"
    return verdict + signature + raw


def nav(
    state: str, sysname: str, history_id: int | None, event: str = "boxState", subject: str = ""
) -> bytes:
    """An alert as NAV's e-mail dispatcher sends it: the template's first line as subject, X-NAV-* headers."""
    alert_id = next(_alert_ids)
    headers = {
        "X-NAV-Alert-ID": str(alert_id),
        "X-NAV-Alert-Subsystem": "pping" if event == "boxState" else "ipdevpoll",
        "X-NAV-Alert-Netbox": sysname,
        "X-NAV-Alert-Device": "None",
        "X-NAV-Alert-SubID": "",
        "X-NAV-Event-Type": event,
        "X-NAV-Alert-State": state,
    }
    if history_id is not None:
        headers["X-NAV-Alert-History-ID"] = str(history_id)
    word = {"start": "down", "end": "up", "stateless": "reporting"}[state]
    return _proven(
        mail(
            sender="nav@noc.service.example",
            subject=subject or f"Box {sysname} is {word}",
            body=f"IP: 10.20.30.40\nBox {sysname} (10.20.30.40) is {word}, alert {alert_id}.\n",
            message_id=f"<{alert_id}.nav@noc.service.example>",
            headers=headers,
        )
    )


def _outbox_size(runtime: Runtime) -> int:
    """Mail queued for anyone but the centre's own agents (who hear of every new incident)."""
    return int(runtime.store.one("SELECT count(*) AS n FROM outbox WHERE kind != 'agent-notify'")["n"])


def test_down_then_up_over_smtp_resolves_the_same_case_without_any_reply(server: Server) -> None:
    """A boxState start opens a high-priority incident for Nordby skole; its end resolves that case."""
    port = server.listener.address[1]
    assert smtp_send(port, nav("start", "sw-nordby-1", 4711), mail_from="nav@noc.service.example")[0] == 250
    assert smtp_send(port, nav("end", "sw-nordby-1", 4711), mail_from="nav@noc.service.example")[0] == 250
    runtime = server.runtime
    cases = runtime.store.query("SELECT id, organization, category, priority, status, subject FROM cases")
    assert cases == [
        {
            "id": 1,
            "organization": "nordby-skole",
            "category": "incident",
            "priority": "high",
            "status": "resolved",
            "subject": "Box sw-nordby-1 is down",
        }
    ]
    case = show_case(runtime.store, 1)
    assert case is not None
    inbound = [m["subject"] for m in case["messages"] if m["direction"] == "in"]
    assert inbound == ["Box sw-nordby-1 is down", "Box sw-nordby-1 is up"]
    # serve's notice timer (every 30 s) may note the flapping after these: tests/test_incident_notices.py.
    assert [e["action"] for e in case["history"] if e["actor"] == "monitoring"][:4] == [
        "opened",
        "alert-start",
        "alert-end",
        "resolved",
    ]
    assert _outbox_size(runtime) == 0


def test_repeated_down_alerts_join_one_case_until_every_alert_is_up(runtime: Runtime) -> None:
    """The same history id twice and a link alert on the same box share one case; the last up resolves it."""
    first = process(runtime, nav("start", "rtr-fjv-core", 5001), "test")
    again = process(runtime, nav("start", "rtr-fjv-core", 5001), "test")
    link = process(
        runtime,
        nav("start", "rtr-fjv-core", 5002, "linkState", "Link down on Gi1/0/1 at rtr-fjv-core"),
        "test",
    )
    assert first.outcome == "opened"
    assert (again.outcome, again.case_id, link.outcome, link.case_id) == ("appended", 1, "appended", 1)
    assert process(runtime, nav("end", "rtr-fjv-core", 5001), "test").case_id == 1
    assert runtime.store.one("SELECT status FROM cases WHERE id = 1")["status"] == "new"
    process(
        runtime, nav("end", "rtr-fjv-core", 5002, "linkState", "Link up on Gi1/0/1 at rtr-fjv-core"), "test"
    )
    assert runtime.store.query("SELECT id, organization, status FROM cases") == [
        {"id": 1, "organization": "fjellvik-kommune", "status": "resolved"}
    ]
    assert _outbox_size(runtime) == 0


def test_alert_inside_a_planned_change_window_is_expected_and_opens_no_incident(runtime: Runtime) -> None:
    """A device going down while its organisation's announced change runs is recorded on the change."""
    with freeze_time(datetime(2026, 3, 24, 9, 0, tzinfo=OSLO), real_asyncio=True) as frozen:
        change_id = plan_change(
            runtime,
            ["vestland-college"],
            datetime(2026, 4, 8, 22, 0, tzinfo=OSLO),
            datetime(2026, 4, 9, 1, 0, tzinfo=OSLO),
            "Core switch upgrade",
            "New software on the core switches.",
            "",
            False,
            "mona",
        )
        frozen.move_to(datetime(2026, 4, 8, 22, 10, tzinfo=OSLO))
        down = process(runtime, nav("start", "core-sw1.vic.example", 6001), "test")
        up = process(runtime, nav("end", "core-sw1.vic.example", 6001), "test")
        frozen.move_to(datetime(2026, 4, 9, 1, 30, tzinfo=OSLO))
        after = process(runtime, nav("start", "core-sw1.vic.example", 6002), "test")
    assert (down.outcome, down.case_id, up.outcome, up.case_id) == ("appended", None, "appended", None)
    assert f"change {change_id}" in down.reason
    history = runtime.store.query(
        "SELECT e.action, m.subject FROM change_events e JOIN messages m ON m.id = e.message"
        " WHERE e.change_id = ? ORDER BY e.id",
        (change_id,),
    )
    assert history == [
        {"action": "alert-expected", "subject": "Box core-sw1.vic.example is down"},
        {"action": "alert-end", "subject": "Box core-sw1.vic.example is up"},
    ]
    assert after.outcome == "opened"  # once the window has closed, a down is an incident again


def test_stateless_alert_is_noted_on_an_open_case_or_ignored(runtime: Runtime) -> None:
    """A stateless alert joins the device's open case; with none open it is stored and nothing happens."""
    alone = process(runtime, nav("stateless", "ap-nordby-12", None, "info", "ap-nordby-12 rebooted"), "test")
    assert (alone.outcome, alone.case_id) == ("ignored", None)
    assert runtime.store.one("SELECT count(*) AS n FROM cases")["n"] == 0
    process(runtime, nav("start", "ap-nordby-12", 7001), "test")
    noted = process(runtime, nav("stateless", "ap-nordby-12", None, "info", "ap-nordby-12 rebooted"), "test")
    assert (noted.outcome, noted.case_id) == ("appended", 1)
    actions = runtime.store.query("SELECT action FROM events WHERE case_id = 1 AND actor = 'monitoring'")
    assert [a["action"] for a in actions] == ["opened", "alert-start", "alert-noted"]
    assert runtime.store.one("SELECT priority FROM cases WHERE id = 1")["priority"] == "high"


def test_alert_for_an_unknown_device_is_held_for_triage(runtime: Runtime) -> None:
    """No organisation's device patterns match: held with a reason naming the device, no case, no reply."""
    result: Result = process(runtime, nav("start", "sw-ukjent-9", 8001), "test")
    assert result.outcome == "held"
    held = runtime.store.query("SELECT from_addr, reason FROM messages WHERE disposition = 'held'")
    assert held == [
        {
            "from_addr": "nav@noc.service.example",
            "reason": "NAV alert for unknown device 'sw-ukjent-9': no organisation's devices match",
        }
    ]
    assert runtime.store.one("SELECT count(*) AS n FROM cases")["n"] == 0
    assert _outbox_size(runtime) == 0


def test_nav_headers_from_an_unlisted_sender_open_nothing(tmp_path, relay) -> None:  # type: ignore[no-untyped-def]
    """With monitoring.senders set, a forged "Box is down" from anyone else is held, not an incident."""
    from gateway.core.config import load_config

    path = write_trusting_config(tmp_path, relay.port, {NAV_KEY: _nav_key()[1]}, MONITORING)
    runtime = Runtime(load_config(path))
    forged = nav("start", "sw-nordby-1", 5150).replace(b"nav@noc.service.example", b"nav@evil.example", 1)
    assert process(runtime, forged, "smtp").outcome == "held"
    assert process(runtime, nav("start", "sw-nordby-2", 5151), "smtp").outcome == "opened"
    assert [c["subject"] for c in runtime.store.query("SELECT subject FROM cases")] == [
        "Box sw-nordby-2 is down"
    ]
    runtime.close()
