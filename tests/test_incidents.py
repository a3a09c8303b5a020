"""Incidents the centre detects: a case, a notice to the incidents contacts, follow-ups in one thread."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.incidents.detected import notify, resolve, update
from gateway.ops.queries import show_case
from gateway.outbox.queue import Deliverer
from gateway.pipeline.process import process
from gateway.runtime import Runtime
from tests.support import RecordingRelay, mail

FJELLVIK_INCIDENTS = "it-varsling@fjellvik.kommune.example"
VIC_INCIDENTS = "servicedesk@vestland-college.example"


def _flush(runtime: Runtime) -> None:
    Deliverer(runtime.config, runtime.store).flush()


def test_notify_opens_an_incident_case_and_tells_only_the_incidents_contacts(
    runtime: Runtime, relay: RecordingRelay
) -> None:
    """`incident notify` opens an incident case and mails the organisation's incidents contacts, in bokmål."""
    case_id = notify(
        runtime, "fjellvik-kommune", "Brudd på fiber til rådhuset", "Graving ved Storgata.", "mona"
    )
    _flush(runtime)
    assert [r.rcpt_tos for r in relay.received] == [[FJELLVIK_INCIDENTS]]
    notice = relay.received[0]
    org = "Fjellvik kommune, Etat for oppvekst"
    assert (
        notice.message["Subject"]
        == f"[SSC#{case_id}] Hendelse i nettet til {org}: Brudd på fiber til rådhuset"
    )
    assert "Graving ved Storgata." in notice.body and f"SSC#{case_id}" in notice.body
    case = runtime.store.one("SELECT category, organization, status FROM cases WHERE id = ?", (case_id,))
    assert case == {"category": "incident", "organization": "fjellvik-kommune", "status": "new"}


def test_update_and_resolve_answer_the_first_notice(runtime: Runtime, relay: RecordingRelay) -> None:
    """Follow-ups and the all-clear carry In-Reply-To/References of the first notice; English for VIC."""
    case_id = notify(runtime, "vestland-college", "Wireless outage in building B", "", "mona")
    update(runtime, case_id, "A faulty controller has been replaced; access points are coming back.", "mona")
    resolve(runtime, case_id, "", "mona")
    _flush(runtime)
    first, follow_up, all_clear = (r.message for r in relay.to(VIC_INCIDENTS))
    assert first["Subject"].startswith(f"[SSC#{case_id}] Incident in the network of Vestland")
    assert follow_up["Subject"] == f"[SSC#{case_id}] Update: Wireless outage in building B"
    assert all_clear["Subject"] == f"[SSC#{case_id}] Resolved: Wireless outage in building B"
    for later in (follow_up, all_clear):
        assert later["In-Reply-To"] == first["Message-ID"]
        assert later["References"] == first["Message-ID"]
    assert runtime.store.one("SELECT status FROM cases WHERE id = ?", (case_id,))["status"] == "resolved"


def test_customer_reply_to_the_notice_joins_the_case(runtime: Runtime, relay: RecordingRelay) -> None:
    """The incidents contact's answer to the notice threads into the incident case and reopens nothing new."""
    case_id = notify(runtime, "fjellvik-kommune", "Treg forbindelse på skolene", "", "mona")
    _flush(runtime)
    notice = relay.received[0].message
    reply = mail(
        sender=f"Servicetorget IT <{FJELLVIK_INCIDENTS}>",
        subject=f"SV: {notice['Subject']}",
        body="Det gjelder særlig Nordre skole, siden kl. 08.\n",
        headers={"In-Reply-To": notice["Message-ID"]},
    )
    result = process(runtime, reply, "test")
    assert (result.outcome, result.case_id) == ("appended", case_id)
    case = show_case(runtime.store, case_id)
    assert case is not None and any("Nordre skole" in m["body"] for m in case["messages"])


def test_incident_commands_exit_codes(
    runtime: Runtime, relay: RecordingRelay, config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI opens and resolves (case ids as 1, SSC#1 or [SSC#1]); an unknown organisation is 65, an unknown case 66, a second resolve 65."""
    base = ["--config", str(config_path), "incident"]
    assert main([*base, "notify", "--org", "nordby-skole", "--title", "Nettet er nede i gymsalen"]) == 0
    assert "opened SSC#1" in capsys.readouterr().out
    assert main([*base, "update", "SSC#1", "--message", "Feilen er funnet i svitsjen."]) == 0
    assert main([*base, "resolve", "[SSC#1]", "--message", "Svitsjen er byttet."]) == 0
    assert main([*base, "resolve", "1"]) == 65
    assert main([*base, "notify", "--org", "ukjent", "--title", "x"]) == 65
    assert main([*base, "update", "99", "--message", "x"]) == 66
    assert "already resolved" in capsys.readouterr().err
    _flush(runtime)
    assert len(relay.to("it@nordby-skole.example")) == 3
