"""Our automatic mail never carries links or body text from a sender who was not authenticated."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.core.config import load_config
from gateway.notices.echo import MAX_ECHO, echo
from gateway.ops.server import Server
from tests.support import RecordingRelay, mail, smtp_send, wait_for, write_config

PHISH = "Passordet ditt utløper – logg inn på http://evil.example/login"
BODY = "KROPPSTEKST-7f3a: gå til https://evil.example/b eller www.evil.example nå.\n"


@pytest.fixture
def serve(tmp_path, relay: RecordingRelay) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    srv = Server(load_config(write_config(tmp_path, relay_port=relay.port)))
    srv.start()
    yield srv
    srv.stop()


def auto_reply_to(srv: Server, relay: RecordingRelay, sender: str, address: str, subject: str) -> str:
    """Send a forged (unsigned) mail over SMTP; the subject and body of what we send back, decoded."""
    assert smtp_send(srv.listener.address[1], mail(sender=sender, subject=subject, body=BODY))[0] == 250
    got = wait_for(lambda: relay.to(address), what=f"automatic mail to {address}")[0]
    return f"{got.message['Subject']}\n{got.body}"


@pytest.mark.parametrize(
    ("sender", "address", "kind"),
    [
        (
            '"Logg inn på evil.example" <kari.nordmann@nordby-skole.example>',
            "kari.nordmann@nordby-skole.example",
            "SSC#",
        ),
        ("Ola <ola.elev@nordby-skole.example>", "ola.elev@nordby-skole.example", "brukerstøtten"),
    ],
)
def test_receipts_and_refusals_repeat_no_link_and_no_body(
    serve: Server, relay: RecordingRelay, sender: str, address: str, kind: str
) -> None:
    """A receipt (forged contact) and a refusal (forged end user) echo a defanged subject, never links or the body."""
    sent = auto_reply_to(serve, relay, sender, address, PHISH)
    assert kind in sent  # the control: it is the receipt, or the refusal pointing to local support
    assert "Passordet ditt utløper" in sent  # the subject is echoed, defanged
    for leak in ("http", "evil.example", "www.", "KROPPSTEKST"):
        assert leak not in sent, leak


def test_echo_is_defanged_and_bounded() -> None:
    """Schemes, www, addresses and bare domains become a placeholder; the echo is never longer than MAX_ECHO."""
    assert echo(PHISH) == "Passordet ditt utløper – logg inn på […]"
    assert echo("Se evil．example/x og kari@evil.example") == "Se […] og […]"  # full-width dot too
    assert echo("Bestilling: VLAN 40 på port 7") == "Bestilling: VLAN 40 på port 7"
    assert len(echo("Skriveren " * 30)) == MAX_ECHO
