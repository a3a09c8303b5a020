"""Staff and customer mail through `serve` and `digest` speaks the reader's language with the centre's own name."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from zoneinfo import ZoneInfo

import dkim
import pytest
from freezegun import freeze_time

from gateway.cli.main import main
from gateway.core.config import load_config
from gateway.ops.server import Server
from gateway.store.database import open_store
from tests.digest_support import add_case
from tests.support import Received, RecordingRelay, dkim_keypair, mail, smtp_send, wait_for, write_config

CENTRE = "Campus Nettverkssenter"
KARI = "Kari Nordmann <kari.nordmann@nordby-skole.example>"
MONA = "Mona Sørensen <mona@service.example>"
OSLO = ZoneInfo("Europe/Oslo")


def _renamed(path: Path) -> Path:
    """The centre under another name than the default, so a hard-coded name shows."""
    text = path.read_text(encoding="utf-8").replace('name = "Servicesenteret"', f'name = "{CENTRE}"')
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def config_path(tmp_path: Path, relay: RecordingRelay) -> Path:
    """serve's pipeline in this process, so an offline DKIM key can prove the agent's mail."""
    return _renamed(write_config(tmp_path, relay_port=relay.port, intake_process=False))


@pytest.fixture(scope="module")
def dkim_key() -> tuple[bytes, bytes]:
    return dkim_keypair()


@pytest.fixture
def signed(server: Server, dkim_key: tuple[bytes, bytes]) -> Callable[[bytes], bytes]:
    """Agents' mail signed by service.example, as their own mail system would sign it."""
    key, record = dkim_key
    lookup = {b"gw._domainkey.service.example.": record}
    server.runtime.txt_lookup = lambda name, timeout=5: lookup.get(name)  # type: ignore[method-assign]
    headers = [b"from", b"to", b"subject", b"message-id", b"in-reply-to"]
    return lambda raw: dkim.sign(raw, b"gw", b"service.example", key, include_headers=headers) + raw


def _notice(relay: RecordingRelay) -> Received:
    found = wait_for(
        lambda: [r for r in relay.to("mona@service.example") if r.message["Reply-To"]], what="notice"
    )
    return found[-1]  # type: ignore[no-any-return]


def test_agents_notice_shows_category_priority_and_status_in_bokmal(
    server: Server, relay: RecordingRelay
) -> None:
    """A new case's notice to the agents names its values in bokmål and the organisation by its name."""
    smtp_send(server.listener.address[1], mail(sender=KARI, subject="Nettet er nede"))
    body = _notice(relay).body
    assert "Kategori: hendelse · prioritet: normal · status: ny" in body
    assert "Virksomhet: Nordby skole" in body
    assert "Fra: Kari Nordmann <kari.nordmann@nordby-skole.example>" in body


def test_a_sender_without_a_display_name_leaves_no_gap(server: Server, relay: RecordingRelay) -> None:
    """An address with no display name is shown alone, without a double space before it."""
    smtp_send(server.listener.address[1], mail(sender="kari.nordmann@nordby-skole.example"))
    body = _notice(relay).body
    assert "Fra: <kari.nordmann@nordby-skole.example>" in body and "  <" not in body


def test_escalation_names_the_configured_centre_and_quotes_the_customers_values(
    server: Server, relay: RecordingRelay, signed: Callable[[bytes], bytes]
) -> None:
    """2nd line reads the configured centre name, the organisation's name, the user name itself and local times."""
    port = server.listener.address[1]
    text = (
        "Hei,\n\nPCen på rom 204 i bygg A kommer ikke på eduroam siden i morges kl. 08:10. "
        "Brukernavnet mitt er kari.n på eduroam, og jeg har prøvd å starte på nytt.\n\nKari\n"
    )
    smtp_send(port, mail(sender=KARI, subject="Eduroam virker ikke", body=text))
    notice = _notice(relay).message
    reply_to = notice["Reply-To"].addresses[0].addr_spec
    raw = mail(
        sender=MONA, to=reply_to, subject=f"SV: {notice['Subject']}", body="#eskaler\n",
        headers={"In-Reply-To": notice["Message-ID"]},
    )  # fmt: skip
    assert smtp_send(port, signed(raw))[0] == 250
    body = wait_for(lambda: relay.to("andrelinje@service.example"), what="escalation")[0].body
    assert f"er eskalert fra {CENTRE}." in body and "Servicesenteret" not in body
    assert "Virksomhet: Nordby skole" in body and "nordby-skole\r\n" not in body
    assert "Kategori: hendelse · prioritet: normal" in body
    assert "brukernavnet (gjelder eduroam): kari.n" in body and "Brukernavnet\r\n" not in body
    assert "siden i morges kl. 08:10" in body and "prøvd å starte på nytt" in body
    # Times in the history are local and written the Norwegian way, not ISO.
    assert re.search(r"--- \w+dag \d{1,2}\. \w+ \d{4} kl\. \d\d:\d\d, kari\.nordmann@", body), body
    assert "+00:00" not in body and "UTC" not in body


def test_a_case_over_both_targets_is_listed_once_in_the_digest(tmp_path: Path) -> None:
    """`gateway digest` lists a case that broke first response and resolution once under OVER FRIST."""
    path = _renamed(write_config(tmp_path))
    store = open_store(load_config(path).storage)
    add_case(store, "Kritisk brudd", datetime(2026, 11, 21, 22, 0, tzinfo=OSLO), priority="critical")
    store.close()
    with freeze_time(datetime(2026, 11, 23, 6, 0, tzinfo=OSLO)):
        assert (
            main(["--config", str(path), "digest", "--period", "daily", "--to", "mona@service.example"]) == 0
        )
    store = open_store(load_config(path).storage)
    raw = bytes(store.one("SELECT raw FROM outbox WHERE kind LIKE 'digest-%'")["raw"])
    store.close()
    text = message_from_bytes(raw, policy=default).get_body(("plain",)).get_content()  # type: ignore[union-attr]
    over = text.split("OVER FRIST")[1].split("VENTER PÅ")[0]
    assert over.startswith(" (1)") and over.count("Kritisk brudd") == 1
    assert f"fra {CENTRE} for" in text
