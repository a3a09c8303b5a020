"""Local work: an agent asks the customer's Lokalt supportpunkt, by `#lokalt` or from a shell."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest

from gateway.cli.main import main as gateway_main
from gateway.ops.server import Server
from gateway.runtime import Runtime
from tests.support import (
    REPO,
    Received,
    RecordingRelay,
    dkim_keypair,
    mail,
    smtp_send,
    wait_for,
    write_config,
)

OLA = "Ola Bakken <ola.bakken@fjellvik.kommune.example>"  # Teknisk ansvarlig, Fjellvik
OLA_ADDR = "ola.bakken@fjellvik.kommune.example"
FJELLVIK_LOCAL = "brukerstotte@fjellvik.kommune.example"  # Lokalt supportpunkt, Fjellvik
VIC_LOCAL = "servicedesk@vestland-college.example"
MONA = "Mona Sørensen <mona@service.example>"
MONA_ADDR = "mona@service.example"
Signer = Callable[[bytes], bytes]
WITHOUT_LOCAL_SUPPORT = "Fjellvik without its Lokalt supportpunkt"


def _registry_without_local_support(tmp_path: Path) -> Path:
    """The shipped registry with Fjellvik's Lokalt supportpunkt taken out."""
    text = (REPO / "data" / "contacts.toml").read_text(encoding="utf-8")
    block = re.search(
        r'\n  \[\[organization\.contact\]\]\n  role = "local-support"\n  name = "Brukerstøtte Fjellvik"\n.*?\n\n',
        text,
        re.S,
    )
    assert block is not None
    path = tmp_path / "contacts.toml"
    path.write_text(text.replace(block.group(0), "\n"), encoding="utf-8")
    return path


@pytest.fixture
def config_path(tmp_path: Path, relay: RecordingRelay, request: pytest.FixtureRequest) -> Path:
    """serve's pipeline in this process, so its Runtime can be given the agents' DKIM key."""
    path = write_config(tmp_path, relay_port=relay.port, intake_process=False)
    if getattr(request, "param", "") == WITHOUT_LOCAL_SUPPORT:
        registry = _registry_without_local_support(tmp_path)
        shipped = str(REPO / "data" / "contacts.toml")
        path.write_text(path.read_text(encoding="utf-8").replace(shipped, str(registry)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def dkim_key() -> tuple[bytes, bytes]:
    return dkim_keypair()


@pytest.fixture
def signed(server: Server, dkim_key: tuple[bytes, bytes]) -> Signer:
    """Agents' mail is DKIM-signed by service.example, as their own mail system does."""
    key, record = dkim_key
    server.runtime.txt_lookup = lambda name, timeout=5: (
        record if name == b"gw._domainkey.service.example." else None
    )
    headers = [b"from", b"to", b"subject", b"message-id", b"in-reply-to"]
    return lambda raw: dkim.sign(raw, b"gw", b"service.example", key, include_headers=headers) + raw


def _open_case(server: Server, relay: RecordingRelay, sender: str = OLA) -> Received:
    """A customer's fault report opens case 1; returns Mona's notice with its per-case Reply-To."""
    port = server.listener.address[1]
    report = mail(sender=sender, subject="Ingen nett i rom 204", message_id="<f1@fjellvik.kommune.example>")
    assert smtp_send(port, report)[0] == 250
    notices = wait_for(lambda: [r for r in relay.to(MONA_ADDR) if r.message["Reply-To"]], what="notice")
    return notices[-1]


def _agent_reply(notice: Received, body: str) -> bytes:
    return mail(
        sender=MONA,
        to=notice.message["Reply-To"].addresses[0].addr_spec,
        subject=f"SV: {notice.message['Subject']}",
        body=body,
        headers={"In-Reply-To": notice.message["Message-ID"]},
    )


def _history(runtime: Runtime, action: str) -> list[dict[str, object]]:
    return runtime.store.query(
        "SELECT actor, detail, reason FROM events WHERE case_id = 1 AND action = ? ORDER BY id", (action,)
    )


def test_lokalt_reply_reaches_local_support_and_their_answer_lands_in_the_case(
    server: Server, relay: RecordingRelay, signed: Signer
) -> None:
    """`#lokalt` mails the Lokalt supportpunkt (tag, per-case Reply-To, bokmål), never the requester,
    and their answer to that Reply-To lands in the same case."""
    port = server.listener.address[1]
    notice = _open_case(server, relay)
    work = "Koble uttak 2-14 i rom 204 til svitsjen i etasjefordeleren."
    assert smtp_send(port, signed(_agent_reply(notice, f"#lokalt\n\n{work}\n\nMona")))[0] == 250
    asked = wait_for(lambda: relay.to(FJELLVIK_LOCAL), what="local work mail")[0]
    assert asked.message["Subject"].startswith("[SSC#1] Forespørsel om lokalt arbeid")
    reply_to = asked.message["Reply-To"].addresses[0].addr_spec
    assert re.fullmatch(r"kontakt\+ssc1\.[0-9a-f]{10}@service\.example", reply_to)
    assert work in asked.body and "Lokalt supportpunkt hos Fjellvik kommune, Etat for oppvekst" in asked.body
    assert "Mona Sørensen" in str(asked.message["From"]) and MONA_ADDR not in asked.raw.decode()
    confirmation = wait_for(lambda: [r for r in relay.to(MONA_ADDR) if "Utført" in str(r.message["Subject"])])
    assert FJELLVIK_LOCAL in confirmation[0].body
    assert not [r for r in relay.to(OLA_ADDR) if work in r.body]  # the requester never sees it
    [requested] = _history(server.runtime, "local-work-requested")
    assert requested["actor"] == MONA_ADDR and requested["detail"] == FJELLVIK_LOCAL
    assert work in str(requested["reason"])
    # Their answer: to the Reply-To only, with a subject of their own and no reply headers.
    done = mail(
        sender=f"Brukerstøtte <{FJELLVIK_LOCAL}>", to=reply_to, subject="Ferdig", body="Uttakene er koblet."
    )
    assert smtp_send(port, done)[0] == 250
    row = wait_for(
        lambda: server.runtime.store.query(
            "SELECT case_id, reason FROM messages WHERE from_addr = ?", (FJELLVIK_LOCAL,)
        )
    )[0]
    assert row["case_id"] == 1 and "per-case reply address" in str(row["reason"])
    assert server.runtime.store.one("SELECT count(*) AS n FROM cases")["n"] == 1


@pytest.mark.parametrize("config_path", [WITHOUT_LOCAL_SUPPORT], indirect=True)
def test_lokalt_without_local_support_tells_the_agent(
    server: Server, relay: RecordingRelay, signed: Signer
) -> None:
    """With no Lokalt supportpunkt registered, nothing goes out; the agent is told and the history keeps it."""
    port = server.listener.address[1]
    notice = _open_case(server, relay)
    body = "#lokalt Bytt den defekte svitsjen i rom 204.\n"
    assert smtp_send(port, signed(_agent_reply(notice, body)))[0] == 250
    told = wait_for(lambda: [r for r in relay.to(MONA_ADDR) if "IKKE bestilt" in r.body], what="agent told")[0]
    # Staff mail is in bokmål: the reason names the organisation, not a registry id.
    assert "Fjellvik kommune" in told.body and "har ikke noe Lokalt supportpunkt" in told.body
    [failed] = _history(server.runtime, "local-work-failed")
    assert "Bytt den defekte svitsjen" in str(failed["detail"])
    kinds = [r["kind"] for r in server.runtime.store.query("SELECT kind FROM outbox")]
    assert "local-work" not in kinds and "answer" not in kinds


def _cli(config_path: Path, *args: str) -> int:
    return gateway_main(["--config", str(config_path), "cases", "local-work", *args])


def test_local_work_from_the_shell_in_the_organisations_language(
    server: Server, relay: RecordingRelay, config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gateway cases local-work [SSC#1] --as … --json` mails an English organisation's Lokalt
    supportpunkt in English, with the tag and the case's Reply-To, and records it."""
    _open_case(server, relay, sender="James Whitfield <j.whitfield@vestland-college.example>")
    text = "Please swap the faulty access point in room B12 for the spare we sent."
    code = _cli(config_path, "[SSC#1]", "--text", text, "--as", MONA_ADDR, "--json")
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sent_to"] == [VIC_LOCAL] and out["language"] == "en" and out["case_id"] == 1
    asked = wait_for(lambda: [r for r in relay.to(VIC_LOCAL) if text in r.body], what="local work mail")[0]
    assert asked.message["Subject"].startswith("[SSC#1] Request for local work")
    assert asked.message["Message-ID"] == out["message_id"]
    assert asked.message["Reply-To"].addresses[0].addr_spec.startswith("kontakt+ssc1.")
    assert _history(server.runtime, "local-work-requested")[0]["detail"] == VIC_LOCAL


@pytest.mark.parametrize("config_path", [WITHOUT_LOCAL_SUPPORT], indirect=True)
def test_local_work_from_the_shell_refused_without_local_support(
    server: Server, relay: RecordingRelay, config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The shell command exits 65 naming the missing Lokalt supportpunkt, and the attempt is in the history."""
    _open_case(server, relay)
    assert _cli(config_path, "SSC#1", "--text", "Patch uttak 3", "--as", MONA_ADDR) == 65
    assert "no Lokalt supportpunkt" in capsys.readouterr().err
    assert len(_history(server.runtime, "local-work-failed")) == 1
    assert (
        _cli(config_path, "1", "--text", "Patch uttak 3", "--as", "ola.bakken@fjellvik.kommune.example") == 65
    )
    assert _cli(config_path, "9", "--text", "Patch uttak 3", "--as", MONA_ADDR) == 66


def test_lokalt_without_its_hash_stays_internal(
    server: Server, relay: RecordingRelay, signed: Signer
) -> None:
    """A first line like "Lokalt: …" without '#' is kept internal: neither an answer nor a guessed request."""
    port = server.listener.address[1]
    notice = _open_case(server, relay)
    body = "Lokalt: bytt den defekte svitsjen i rom 204.\n"
    assert smtp_send(port, signed(_agent_reply(notice, body)))[0] == 250
    wait_for(
        lambda: [r for r in relay.to(MONA_ADDR) if "Utført" in str(r.message["Subject"])], what="confirmation"
    )
    kinds = [r["kind"] for r in server.runtime.store.query("SELECT kind FROM outbox")]
    assert "answer" not in kinds and "local-work" not in kinds
    note = server.runtime.store.one("SELECT internal, body FROM messages WHERE from_addr = ?", (MONA_ADDR,))
    assert note["internal"] == 1 and "defekte svitsjen" in note["body"]
