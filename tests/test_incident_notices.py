"""Monitoring incidents told to the customer: after the window, once, with updates, the all-clear and after-hours escalation."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory

from gateway.cli.main import main
from gateway.core.config import ConfigError, load_config
from gateway.incidents.announce import notify_due
from gateway.ops.server import Server
from gateway.pipeline.process import process
from gateway.runtime import Runtime
from tests.support import REPO, RecordingRelay, smtp_send, wait_for, write_config
from tests.test_monitoring import NAV_KEY, _nav_key, nav

OSLO = ZoneInfo("Europe/Oslo")
GATEWAY = [sys.executable, "-m", "gateway"]
NORDBY_INCIDENTS = "it@nordby-skole.example"
FJELLVIK_INCIDENTS = "it-varsling@fjellvik.kommune.example"
FJELLVIK_TECHNICAL = ["ola.bakken@fjellvik.kommune.example", "siri.lie@fjellvik.kommune.example"]
VIC_INCIDENTS = "servicedesk@vestland-college.example"
AGENTS = ["erik@service.example", "mona@service.example"]


def nav_config(tmp: Path, relay_port: int, after_minutes: int | str = 5) -> Path:
    """NAV is trusted by DKIM, and serve's pipeline runs in this process so the frozen clock reaches it."""
    (tmp / "dkim-keys.zone").write_text(f'{NAV_KEY}. TXT "{_nav_key()[1].decode("ascii")}"\n')
    path = write_config(tmp, relay_port=relay_port, intake_process=False)
    with path.open("a", encoding="utf-8") as out:
        out.write(
            '\n[auth]\nauthserv_id = "mx.service.example"\ndkim_keys_file = "dkim-keys.zone"\n'
            f'[monitoring]\nsenders = ["NAV@noc.service.example"]\nnotify_after_minutes = {after_minutes}\n'
        )
    return path


@pytest.fixture
def config_path(tmp_path: Path, relay: RecordingRelay) -> Path:
    return nav_config(tmp_path, relay.port)


@pytest.fixture
def clock_at() -> Iterator[FrozenDateTimeFactory]:
    """Tuesday 24 March 2026, 10:00 in Oslo: a working day, inside opening hours."""
    with freeze_time(datetime(2026, 3, 24, 10, 0, tzinfo=OSLO), real_asyncio=True) as frozen:
        yield frozen


@pytest.fixture
def serve(config_path: Path, clock_at: FrozenDateTimeFactory) -> Iterator[Server]:
    srv = Server(load_config(config_path))
    srv.start()
    yield srv
    srv.stop()


def alert(server: Server, state: str, sysname: str, history_id: int, event: str = "boxState") -> None:
    """Send one NAV alert over SMTP and wait until serve has stored it."""
    port = server.listener.address[1]
    assert (
        smtp_send(port, nav(state, sysname, history_id, event), mail_from="nav@noc.service.example")[0] == 250
    )


def tick(server: Server) -> None:
    """Let serve's notice timer run once now, and wait until that run has finished."""
    target = server.notice_starts + 1  # a run already under way may have read the clock too early
    server.wake_notices()
    wait_for(lambda: server.notice_runs >= target, what="a run of the incident notice timer")


def customer_mail(runtime: Runtime) -> list[dict[str, str]]:
    return runtime.store.query("SELECT kind, recipients FROM outbox WHERE kind LIKE 'incident-%' ORDER BY id")


def queued_after(config_path: Path) -> list[dict[str, str]]:
    """The incident mail in the store, read by a Runtime of its own once serve has gone."""
    runtime = Runtime(load_config(config_path))
    try:
        return customer_mail(runtime)
    finally:
        runtime.close()


def test_notice_only_after_the_window_then_the_all_clear(
    serve: Server, relay: RecordingRelay, clock_at: FrozenDateTimeFactory
) -> None:
    """A box down is told to 1st line at once, to the Varslingspunkt Incidents only after 5 minutes, and its up sends the all-clear."""
    alert(serve, "start", "sw-nordby-1", 7001)
    tick(serve)
    assert customer_mail(serve.runtime) == []
    agents = wait_for(lambda: relay.to("mona@service.example"), what="the agents' new-case mail")
    assert agents[0].rcpt_tos == AGENTS and "Box sw-nordby-1 is down" in agents[0].message["Subject"]
    assert "Fra: NAV <nav@noc.service.example>" in agents[0].body
    assert "Virksomhet: Nordby skole" in agents[0].body
    clock_at.tick(timedelta(minutes=4, seconds=59))
    tick(serve)
    assert customer_mail(serve.runtime) == []
    clock_at.tick(timedelta(seconds=1))
    tick(serve)
    notice = wait_for(lambda: relay.to(NORDBY_INCIDENTS), what="the incident notice")[0]
    assert notice.rcpt_tos == [NORDBY_INCIDENTS]
    assert notice.message["Subject"] == "[SSC#1] Hendelse i nettet til Nordby skole: sw-nordby-1 svarer ikke"
    assert "Oppdaget:   tirsdag 24. mars 2026 kl. 10:00" in notice.body
    assert "Berørt utstyr: sw-nordby-1." in notice.body and "2026-03-24" not in notice.body
    clock_at.tick(timedelta(minutes=20))
    alert(serve, "end", "sw-nordby-1", 7001)
    tick(serve)
    mails = wait_for(lambda: len(relay.to(NORDBY_INCIDENTS)) == 2 and relay.to(NORDBY_INCIDENTS))
    all_clear = mails[1]
    assert all_clear.message["Subject"] == "[SSC#1] Løst: sw-nordby-1 svarer ikke"
    assert "er løst (tirsdag 24. mars 2026 kl. 10:25)" in all_clear.body
    assert all_clear.message["In-Reply-To"] == notice.message["Message-ID"]
    tick(serve)
    assert len(customer_mail(serve.runtime)) == 2


def test_flapping_tells_the_customer_nothing(
    serve: Server, relay: RecordingRelay, clock_at: FrozenDateTimeFactory
) -> None:
    """Down and up again inside the window: no mail to the customer, and the case says why."""
    alert(serve, "start", "sw-nordby-2", 7101)
    clock_at.tick(timedelta(minutes=2))
    alert(serve, "end", "sw-nordby-2", 7101)
    clock_at.tick(timedelta(minutes=30))
    tick(serve)
    assert customer_mail(serve.runtime) == []
    history = serve.runtime.store.query("SELECT action FROM events WHERE case_id = 1 ORDER BY id")
    assert {"action": "notice-skipped"} in history
    state = serve.runtime.store.one("SELECT state, notified_at FROM incident_notices WHERE case_id = 1")
    assert state == {"state": "flapped", "notified_at": None}


def test_several_alerts_give_one_notice_then_one_update(
    serve: Server, relay: RecordingRelay, clock_at: FrozenDateTimeFactory
) -> None:
    """Alerts before the notice are listed in it; later ones give one update; in opening hours Teknisk ansvarlig is not mailed."""
    alert(serve, "start", "rtr-fjv-core", 7201, "linkState")
    alert(serve, "start", "rtr-fjv-core", 7201, "linkState")  # NAV repeating itself
    clock_at.tick(timedelta(minutes=1))
    alert(serve, "start", "rtr-fjv-core", 7202, "boxState")
    clock_at.tick(timedelta(minutes=5))
    tick(serve)
    tick(serve)
    assert [m["kind"] for m in customer_mail(serve.runtime)] == ["incident-notice"]
    clock_at.tick(timedelta(minutes=3))
    alert(serve, "start", "rtr-fjv-core", 7203, "linkState")
    tick(serve)
    tick(serve)
    for history_id in (7201, 7202, 7203):
        alert(serve, "end", "rtr-fjv-core", history_id)
    tick(serve)
    sent = customer_mail(serve.runtime)
    assert [m["kind"] for m in sent] == ["incident-notice", "incident-update", "incident-resolved"]
    assert {m["recipients"] for m in sent} == {f'["{FJELLVIK_INCIDENTS}"]'}
    mails = wait_for(lambda: len(relay.to(FJELLVIK_INCIDENTS)) == 3 and relay.to(FJELLVIK_INCIDENTS))
    assert mails[0].message["Subject"].endswith(": Feil meldt på rtr-fjv-core")  # the first alert was a link
    assert "Berørt utstyr: rtr-fjv-core." in mails[0].body
    assert "Nye varsler fra overvåkingen gjelder: rtr-fjv-core." in mails[1].body
    assert all(m.message["In-Reply-To"] == mails[0].message["Message-ID"] for m in mails[1:])


def test_serious_out_of_hours_reaches_teknisk_ansvarlig(
    serve: Server, relay: RecordingRelay, clock_at: FrozenDateTimeFactory
) -> None:
    """At night a critical device's alert goes to Teknisk ansvarlig too (and its all-clear); an ordinary link alert does not."""
    clock_at.move_to(datetime(2026, 3, 24, 22, 0, tzinfo=OSLO))
    alert(serve, "start", "rtr-fjv-core", 7301, "linkState")  # critical in the registry
    alert(serve, "start", "sw-fjv-7", 7302, "linkState")  # neither a box down nor critical
    clock_at.tick(timedelta(minutes=6))
    tick(serve)
    alert(serve, "end", "rtr-fjv-core", 7301)
    tick(serve)
    sent = serve.runtime.store.query(
        "SELECT case_id, kind, recipients FROM outbox WHERE kind LIKE 'incident-%' ORDER BY id"
    )
    everyone = '["' + '", "'.join(sorted([FJELLVIK_INCIDENTS, *FJELLVIK_TECHNICAL])) + '"]'
    assert sent == [
        {"case_id": 1, "kind": "incident-notice", "recipients": everyone},
        {"case_id": 2, "kind": "incident-notice", "recipients": f'["{FJELLVIK_INCIDENTS}"]'},
        {"case_id": 1, "kind": "incident-resolved", "recipients": everyone},
    ]
    notice = wait_for(lambda: relay.to(FJELLVIK_TECHNICAL[0]), what="the notice to Teknisk ansvarlig")[0]
    assert "tirsdag 24. mars 2026 kl. 22:00" in notice.body


def test_english_notice_reads_local_time(
    serve: Server, relay: RecordingRelay, clock_at: FrozenDateTimeFactory
) -> None:
    """An English-speaking organisation gets its notice in English, with the time in Oslo time, not ISO UTC."""
    alert(serve, "start", "core-sw1.vic.example", 7401)
    clock_at.tick(timedelta(minutes=5))
    tick(serve)
    notice = wait_for(lambda: relay.to(VIC_INCIDENTS), what="the English notice")[0]
    assert notice.message["Subject"].startswith("[SSC#1] Incident in the network of Vestland")
    assert notice.message["Subject"].endswith(": core-sw1.vic.example is not responding")
    assert "Tuesday 24 March 2026 at 10:00" in notice.body
    assert "Equipment affected: core-sw1.vic.example." in notice.body
    assert "09:00" not in notice.body and "2026-03-24" not in notice.body


def test_a_restart_neither_loses_nor_repeats_a_notice(
    config_path: Path, relay: RecordingRelay, clock_at: FrozenDateTimeFactory
) -> None:
    """serve stops while a notice is pending; the next serve sends it, and the one after that does not send it again."""
    config = load_config(config_path)
    first = Server(config)
    first.start()
    alert(first, "start", "sw-nordby-3", 7501)
    first.stop()
    clock_at.tick(timedelta(minutes=10))
    for _ in range(2):
        again = Server(config)
        again.start()
        tick(again)
        tick(again)
        again.stop()
    assert [m["kind"] for m in queued_after(config_path)] == ["incident-notice"]


def test_notify_due_from_the_shell_sends_once_even_when_two_run_at_once(
    tmp_path: Path, relay: RecordingRelay
) -> None:
    """`gateway incident notify-due` sends a due notice; two started together queue it once; a third has nothing to do."""
    path = nav_config(tmp_path, relay.port, after_minutes=0)
    piped = subprocess.run(
        [*GATEWAY, "--config", str(path), "deliver"],
        # A link alert on an ordinary switch: who gets it does not depend on the real time of day.
        input=nav("start", "sw-nordby-4", 7601, "linkState"),
        capture_output=True,
        cwd=REPO,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    command = [*GATEWAY, "--config", str(path), "incident", "notify-due"]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO) for _ in range(2)]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    assert sorted(outputs) == ["SSC#1: notified\n", "no incident notices due\n"]
    last = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
    assert (last.returncode, last.stdout) == (0, "no incident notices due\n")
    assert queued_after(path) == [{"kind": "incident-notice", "recipients": f'["{NORDBY_INCIDENTS}"]'}]


@pytest.mark.parametrize("value", ["-1", "1441", '"5"'])
def test_notify_after_minutes_is_validated(tmp_path: Path, value: str) -> None:
    """A negative, too large or non-integer monitoring.notify_after_minutes is refused, naming the key."""
    with pytest.raises(ConfigError, match=r"monitoring\.notify_after_minutes"):
        load_config(nav_config(tmp_path, 2525, after_minutes=value))


def test_an_organisation_without_an_incidents_contact_is_recorded_as_not_told(
    tmp_path: Path, relay: RecordingRelay, clock_at: FrozenDateTimeFactory
) -> None:
    """No Varslingspunkt Incidents in the registry: 1st line still hears of it, and the case says the customer was not told."""
    text = (REPO / "data" / "contacts.toml").read_text(encoding="utf-8")
    head, vic = text.split('id = "vestland-college"', 1)
    registry = tmp_path / "contacts.toml"
    registry.write_text(
        head + 'id = "vestland-college"' + vic.replace('role = "incidents"', 'role = "change"', 1)
    )
    path = nav_config(tmp_path, relay.port)
    path.write_text(path.read_text().replace(str(REPO / "data" / "contacts.toml"), str(registry)))
    runtime = Runtime(load_config(path))
    try:
        assert process(runtime, nav("start", "core-sw1.vic.example", 7701), "pipe").outcome == "opened"
        clock_at.tick(timedelta(minutes=5))
        assert notify_due(runtime) == [
            "SSC#1: not sent: vestland-college has no Varslingspunkt Incidents"
            " (role 'incidents') in the registry"
        ]
        assert notify_due(runtime) == []
        kinds = runtime.store.query("SELECT kind FROM outbox ORDER BY id")
        assert kinds == [{"kind": "agent-notify"}]
        failed = runtime.store.one("SELECT reason FROM events WHERE action = 'notice-failed'")
        assert "no Varslingspunkt Incidents" in failed["reason"]
    finally:
        runtime.close()


def test_an_incident_an_agent_resolved_before_the_window_is_not_announced(
    serve: Server, config_path: Path, clock_at: FrozenDateTimeFactory
) -> None:
    """An agent resolves a monitoring case within the window (NAV still says down): the customer gets no notice."""
    alert(serve, "start", "sw-nordby-5", 7801)
    agent = ["--as", "mona@service.example"]
    assert main(["--config", str(config_path), "cases", "set", "1", "--status", "løst", *agent]) == 0
    clock_at.tick(timedelta(minutes=6))
    tick(serve)
    assert customer_mail(serve.runtime) == []
    state = serve.runtime.store.one("SELECT state FROM incident_notices WHERE case_id = 1")
    assert state == {"state": "resolved"}
