"""Self-service: a user port's VLAN, asked for by a contact who may not order, where NAV access exists."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gateway.core.config import load_config
from gateway.directory.registry import RegistryError, parse_registry
from gateway.store.database import open_store
from tests.support import Received, RecordingRelay, mail, wait_for

FJELLVIK_LOCAL = "Brukerstøtte Fjellvik <brukerstotte@fjellvik.kommune.example>"  # Lokalt supportpunkt
FJELLVIK_ADMIN = "Anne Moe <anne.moe@fjellvik.kommune.example>"  # Juridisk/administrativ ansvarlig
VIC_DESK = "VIC Service Desk <servicedesk@vestland-college.example>"  # English, NAV access
NORDBY_IT = "IT Nordby <it@nordby-skole.example>"  # no NAV access
OLA = "Ola Bakken <ola.bakken@fjellvik.kommune.example>"  # Teknisk ansvarlig
PORT_VLAN = "Kan dere endre VLAN på port 14 i rom 204 til VLAN 30?"


def deliver(config_path: Path, raw: bytes) -> dict[str, object]:
    """`gateway deliver --flush`, as the MTA's pipe runs it: the result line as JSON."""
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(config_path), "deliver", "--flush"],
        input=raw,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _rows(config_path: Path, sql: str, *args: object) -> list[dict[str, object]]:
    store = open_store(load_config(config_path).storage)
    try:
        return store.query(sql, args)
    finally:
        store.close()


def _to(relay: RecordingRelay, address: str) -> Received:
    return wait_for(lambda: relay.to(address), what=f"mail to {address}")[-1]


@pytest.mark.parametrize(
    ("sender", "words"),
    [
        (FJELLVIK_LOCAL, ["selv i NAV", "Teknisk ansvarlig", "Ola Bakken", "90 11 22 33", "Siri Lie"]),
        (FJELLVIK_ADMIN, ["selv i NAV", "Fjellvik kommune, Etat for oppvekst", "siri.lie@fjellvik"]),
        (VIC_DESK, ["can do that in NAV", "Teknisk ansvarlig", "James Whitfield"]),
    ],
)
def test_port_vlan_request_is_answered_as_self_service(
    config_path: Path, relay: RecordingRelay, sender: str, words: list[str]
) -> None:
    """A non-technical contact with NAV access is told to change the port's VLAN in NAV and who may
    order other changes; the case is on record, resolved, with no agent paged."""
    body = (
        PORT_VLAN if "fjellvik" in sender else "Could you change the VLAN on port 7 in room B12 to VLAN 20?"
    )
    result = deliver(config_path, mail(sender=sender, subject="VLAN på port", body=body))
    assert result["outcome"] == "opened" and result["case"] == 1
    answer = _to(relay, sender.split("<")[1].rstrip(">"))
    assert answer.message["Subject"].startswith("[SSC#1]")
    for word in words:
        assert word in answer.body
    [case] = _rows(config_path, "SELECT status, category, resolved_at FROM cases")
    assert case["status"] == "resolved" and case["category"] == "change" and case["resolved_at"]
    events = _rows(config_path, "SELECT action, detail FROM events WHERE case_id = 1")
    assert {"action": "rule-fired", "detail": "vlan-self-service"} in events
    assert any(e["action"] == "resolved" for e in events)
    kinds = [r["kind"] for r in _rows(config_path, "SELECT kind FROM outbox")]
    assert kinds == ["self-service"]


def test_reply_to_a_self_service_answer_reopens_the_case(config_path: Path, relay: RecordingRelay) -> None:
    """A customer who answers the self-service mail gets the case reopened and an agent told."""
    deliver(config_path, mail(sender=FJELLVIK_LOCAL, subject="VLAN på port", body=PORT_VLAN))
    answer = _to(relay, "brukerstotte@fjellvik.kommune.example")
    follow_up = mail(
        sender=FJELLVIK_LOCAL,
        subject=f"SV: {answer.message['Subject']}",
        body="Vi finner ikke porten i NAV.",
        headers={"In-Reply-To": answer.message["Message-ID"]},
    )
    assert deliver(config_path, follow_up)["outcome"] == "appended"
    assert _rows(config_path, "SELECT status FROM cases") == [{"status": "open"}]
    assert "agent-notify" in [r["kind"] for r in _rows(config_path, "SELECT kind FROM outbox")]


@pytest.mark.parametrize(
    ("sender", "body", "outcome", "kind"),
    [
        # No NAV access: the usual answer that only Teknisk ansvarlig may order.
        (NORDBY_IT, PORT_VLAN, "refused", "change-not-allowed"),
        # More than a port's VLAN: not something NAV lets them do.
        (
            FJELLVIK_LOCAL,
            "Kan dere opprette et nytt VLAN for kameraene på port 5?",
            "refused",
            "change-not-allowed",
        ),
        # Teknisk ansvarlig may order: unproven here, so the order waits for a code, as always.
        (OLA, PORT_VLAN, "held", "change-confirm"),
        # A fault report that mentions a VLAN is an incident, never self-service.
        (
            FJELLVIK_LOCAL,
            "PC-en på port 14 i rom 204 (VLAN 30) får ikke nett siden i morges.",
            "opened",
            "receipt",
        ),
    ],
)
def test_other_vlan_mail_takes_the_normal_flow(
    config_path: Path, relay: RecordingRelay, sender: str, body: str, outcome: str, kind: str
) -> None:
    """Without NAV access, beyond a port, from Teknisk ansvarlig or as a fault: never self-service."""
    result = deliver(config_path, mail(sender=sender, subject="VLAN", body=body))
    assert result["outcome"] == outcome
    kinds = [r["kind"] for r in _rows(config_path, "SELECT kind FROM outbox WHERE kind != 'agent-notify'")]
    assert kinds == [kind]
    fired = _rows(config_path, "SELECT detail FROM events WHERE action = 'rule-fired'")
    assert {"detail": "vlan-self-service"} not in fired
    cases = _rows(config_path, "SELECT category, status FROM cases")
    if "ikke nett" in body:
        assert cases == [{"category": "incident", "status": "new"}]
    if sender == OLA:
        assert cases == []


def test_nav_access_must_be_true_or_false(tmp_path: Path) -> None:
    """A registry whose nav_access is not a boolean is refused with the organisation and the key named."""
    text = 'organization = [{ id = "x", name = "X", domains = ["x.example"], nav_access = "yes" }]\n'
    with pytest.raises(RegistryError, match="organization 'x': 'nav_access' must be true or false"):
        parse_registry(tomllib.loads(text))
    assert parse_registry(tomllib.loads(text.replace('"yes"', "true"))).organizations["x"].nav_access
