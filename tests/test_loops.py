"""Nothing loops: two gateways, an out-of-office, a mailing list and a bounce storm all come to rest."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import pytest
from freezegun import freeze_time

from gateway.core import clock
from gateway.core.config import load_config
from gateway.outbox.queue import Deliverer
from gateway.pipeline.process import process
from gateway.runtime import Runtime
from tests.support import REPO, RecordingRelay, mail, write_config

CENTRE = "kontakt@service.example"
OTHER = "support@andre-senteret.example"
KARI = "kari.nordmann@nordby-skole.example"
OLA = "ola.bakken@fjellvik.kommune.example"
LINE_1 = ["erik@service.example", "mona@service.example"]
# A bound far above anything the rules allow: reaching it means a loop.
ROUNDS = 60


def runtime_for(tmp: Path, address: str, prefix: str, registry: Path, **service: str) -> Runtime:
    """A gateway in-process whose public address, case prefix and registry are its own."""
    tmp.mkdir(parents=True, exist_ok=True)
    path = write_config(tmp, **service)
    text = path.read_text(encoding="utf-8")
    text = text.replace(f'address = "{CENTRE}"', f'address = "{address}"', 1)
    text = text.replace('case_prefix = "SSC"', f'case_prefix = "{prefix}"', 1)
    text = text.replace(str(REPO / "data" / "contacts.toml"), str(registry), 1)
    path.write_text(text, encoding="utf-8")
    return Runtime(load_config(path))


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Runtime, Runtime]]:
    """Our centre and another service centre, each a registered contact point in the other's registry."""
    ours = tmp_path / "ours.toml"
    ours.write_text(
        (REPO / "data" / "contacts.toml").read_text(encoding="utf-8")
        + textwrap.dedent(
            f"""
            [[organization]]
            id = "andre-senteret"
            name = "Andre senteret"
            domains = ["andre-senteret.example"]

              [[organization.contact]]
              role = "incidents"
              name = "Andre senteret, kundeservice"
              email = "{OTHER}"
            """
        ),
        encoding="utf-8",
    )
    theirs = tmp_path / "theirs.toml"
    theirs.write_text(
        textwrap.dedent(
            f"""
            [[organization]]
            id = "servicesenteret"
            name = "Servicesenteret"
            domains = ["service.example"]

              [[organization.contact]]
              role = "incidents"
              name = "Servicesenteret"
              email = "{CENTRE}"

            [[agent]]
            name = "Vakt"
            email = "vakt@andre-senteret.example"
            line = 1
            handle = "vakt"
            """
        ),
        encoding="utf-8",
    )
    a = runtime_for(tmp_path / "a", CENTRE, "SSC", ours)
    b = runtime_for(tmp_path / "b", OTHER, "AND", theirs)
    yield a, b
    a.close()
    b.close()


def take_mail_to(runtime: Runtime, address: str) -> list[bytes]:
    """The queued outgoing mail for `address`, marked sent: what the relay would carry to it."""
    with runtime.store.write() as conn:
        rows = conn.execute("SELECT id, recipients, raw FROM outbox WHERE status = 'queued'").fetchall()
        mine = [(row_id, bytes(raw)) for row_id, recipients, raw in rows if address in json.loads(recipients)]
        conn.executemany("UPDATE outbox SET status = 'sent' WHERE id = ?", [(i,) for i, _ in mine])
    return [raw for _, raw in mine]


def strip(raw: bytes, names: tuple[str, ...]) -> bytes:
    """The same mail with the named headers removed, as a careless hop in between might."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    kept: list[bytes] = []
    dropping = False
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = line.split(b":", 1)[0].decode().lower() in names
        if not dropping:
            kept.append(line)
    return b"\r\n".join(kept) + b"\r\n\r\n" + body


def count(runtime: Runtime, sql: str, params: tuple[object, ...] = ()) -> int:
    return int(runtime.store.conn.execute(sql, params).fetchone()[0])


def converse(a: Runtime, b: Runtime, hop: tuple[str, ...] = ()) -> int:
    """Carry each gateway's mail for the other into it until both are quiet; the mails carried."""
    carried = 0
    for _ in range(ROUNDS):
        a_to_b, b_to_a = take_mail_to(a, OTHER), take_mail_to(b, CENTRE)
        if not a_to_b and not b_to_a:
            return carried
        for raw in a_to_b:
            process(b, strip(raw, hop), "smtp", envelope_from=CENTRE)
        for raw in b_to_a:
            process(a, strip(raw, hop), "smtp", envelope_from=OTHER)
        carried += len(a_to_b) + len(b_to_a)
    raise AssertionError(f"still exchanging mail after {ROUNDS} rounds")


def test_two_gateways_stop_after_one_receipt(pair: tuple[Runtime, Runtime]) -> None:
    """A mail from another gateway's address gets one receipt, which that gateway never answers (≤ 2 mails in all)."""
    a, b = pair
    first = process(a, mail(sender=f"Andre senteret <{OTHER}>", subject="Linjen til dere er nede"), "smtp")
    assert first.outcome == "opened" and len(first.replies) == 1
    carried = converse(a, b)
    assert 1 + carried <= 2 and carried == 1
    assert count(b, "SELECT count(*) FROM cases") == 0
    assert count(b, "SELECT count(*) FROM messages WHERE disposition = 'automated'") == 1


def test_two_gateways_without_our_headers_are_bounded_by_threading_and_the_brake(
    pair: tuple[Runtime, Runtime],
) -> None:
    """Even when a hop strips Auto-Submitted, the loop header and the references, two gateways stop within the brake."""
    a, b = pair
    process(a, mail(sender=f"Andre senteret <{OTHER}>", subject="Linjen til dere er nede"), "smtp")
    hop = ("auto-submitted", "x-gateway-loop", "in-reply-to", "references")
    carried = converse(a, b, hop)
    limit = a.config.service.receipt_limit_per_hour
    assert carried <= 2 * limit
    for runtime, peer in ((a, OTHER), (b, CENTRE)):
        replies = count(runtime, "SELECT count(*) FROM auto_replies WHERE recipient = ?", (peer,))
        assert replies <= limit


def out_of_office(raw: bytes, subject_prefix: str, threaded: bool) -> bytes:
    """Kari's autoresponder: answers whatever reaches her, from her own address, with no Auto-Submitted."""
    received = message_from_bytes(raw, policy=default)
    headers = {"In-Reply-To": str(received["Message-ID"])} if threaded else {}
    subject = f"{subject_prefix} {received['Subject']}" if subject_prefix else "Jeg er på ferie til mandag"
    return mail(
        sender=f"Kari Nordmann <{KARI}>",
        subject=subject,
        body="Hei,\n\njeg er borte til mandag og leser ikke e-post.\n\nKari\n",
        headers=headers,
    )


def with_responder(runtime: Runtime, subject_prefix: str, threaded: bool) -> int:
    """Run the gateway against Kari's autoresponder until it is quiet; the replies it sent us."""
    answered = 0
    for _ in range(ROUNDS):
        waiting = [raw for raw in take_mail_to(runtime, KARI)]
        if not waiting:
            return answered
        for raw in waiting:
            process(runtime, out_of_office(raw, subject_prefix, threaded), "smtp")
            answered += 1
    raise AssertionError(f"still answering the autoresponder after {ROUNDS} rounds")


@pytest.mark.parametrize(
    ("subject_prefix", "threaded", "receipts"),
    [
        ("Fraværsmelding:", True, 1),  # known by its subject: stored, never answered
        ("Out of office:", False, 1),
        ("Re:", True, 1),  # an ordinary-looking reply: threaded into the case, which sends nothing
        ("", False, 5),  # a new subject and no references each time: only the hourly brake stops it
    ],
)
def test_out_of_office_without_auto_submitted_is_bounded(
    runtime: Runtime, subject_prefix: str, threaded: bool, receipts: int
) -> None:
    """An autoresponder that answers everything, from a contact's own address and without Auto-Submitted, gets at most receipt_limit_per_hour replies."""
    assert runtime.config.service.receipt_limit_per_hour == 5
    process(runtime, mail(), "smtp")
    with_responder(runtime, subject_prefix, threaded)
    assert count(runtime, "SELECT count(*) FROM auto_replies WHERE recipient = ?", (KARI,)) == receipts
    alerts = count(runtime, "SELECT count(*) FROM outbox WHERE kind = 'loop-alert'")
    assert alerts == (1 if receipts == 5 else 0)


def test_brake_alerts_first_line_once_per_sender_per_hour(runtime: Runtime) -> None:
    """When the brake trips, line-1 agents get one loop-alert per sender per hour, and the event is recorded."""
    with freeze_time("2026-11-24 09:00:00"):
        process(runtime, mail(), "smtp")
        with_responder(runtime, "", False)
        for n in range(3):  # Kari herself writes again within the hour: still silent, no second alert
            process(runtime, mail(subject=f"Fortsatt nede {n}"), "smtp")
        for n in range(6):
            process(runtime, mail(sender=f"Ola <{OLA}>", subject=f"Skriveren virker ikke {n}"), "smtp")
    alerts = runtime.store.query("SELECT recipients, raw FROM outbox WHERE kind = 'loop-alert' ORDER BY id")
    assert [json.loads(a["recipients"]) for a in alerts] == [LINE_1, LINE_1]
    first = message_from_bytes(bytes(alerts[0]["raw"]), policy=default)
    assert first["Auto-Submitted"] == "auto-generated"
    assert KARI in str(first["Subject"]) and "sløyfe" in str(first["Subject"])
    events = runtime.store.query("SELECT detail FROM events WHERE action = 'loop-alert' ORDER BY id")
    assert [e["detail"] for e in events] == [KARI, OLA]

    with freeze_time(clock.now() + timedelta(hours=1, minutes=1)):  # a new hour: the brake lifts
        process(runtime, mail(subject="Nede igjen"), "smtp")
        with_responder(runtime, "", False)
    assert count(runtime, "SELECT count(*) FROM outbox WHERE kind = 'loop-alert'") == 3


def test_loop_alert_is_written_in_the_service_language(tmp_path: Path) -> None:
    """With service.language = "en" the loop-alert to the agents is the English template."""
    path = write_config(tmp_path)
    path.write_text(path.read_text(encoding="utf-8").replace('language = "nb"', 'language = "en"', 1))
    runtime = Runtime(load_config(path))
    try:
        process(runtime, mail(), "smtp")
        with_responder(runtime, "", False)
        (alert,) = runtime.store.query("SELECT raw FROM outbox WHERE kind = 'loop-alert'")
    finally:
        runtime.close()
    message = message_from_bytes(bytes(alert["raw"]), policy=default)
    assert str(message["Subject"]) == f"Possible mail loop: automatic replies to {KARI} have stopped"
    assert "has had 5 automatic replies from us in the last hour" in message.get_body().get_content()


@pytest.mark.parametrize(
    "echo",
    [
        pytest.param({"From": f"Servicesenteret <{CENTRE}>"}, id="list-keeps-our-from"),
        pytest.param(
            {"From": "Servicesenteret via Drift <drift@lister.nordby-skole.example>", "Reply-To": CENTRE},
            id="list-rewrites-from",
        ),
        pytest.param({"From": "IT Nordby skole <it@nordby-skole.example>"}, id="list-is-a-contact-point"),
    ],
)
def test_our_receipt_echoed_by_a_mailing_list_is_never_answered(
    runtime: Runtime, echo: dict[str, str]
) -> None:
    """Our receipt coming back through a mailing list (List-Id, our headers stripped) opens nothing and sends nothing."""
    process(runtime, mail(), "smtp")
    (receipt,) = [r for r in take_mail_to(runtime, KARI)]
    posted = strip(receipt, ("from", "auto-submitted", "x-gateway-loop", "to"))
    head = "".join(f"{k}: {v}\r\n" for k, v in echo.items())
    head += "To: drift@lister.nordby-skole.example\r\nList-Id: Drift <drift.lister.nordby-skole.example>\r\n"
    before = count(runtime, "SELECT count(*) FROM outbox"), count(runtime, "SELECT count(*) FROM cases")
    result = process(runtime, head.encode() + posted, "smtp", envelope_from="drift-bounces@lister.example")
    assert result.outcome == "ignored" and result.replies == []
    assert (
        count(runtime, "SELECT count(*) FROM outbox"),
        count(runtime, "SELECT count(*) FROM cases"),
    ) == before


def dsn(message_id: str, action: str = "failed", n: int = 0) -> bytes:
    """A delivery status notification (RFC 3464) about `message_id`."""
    status = "5.1.1" if action == "failed" else "4.4.7"
    return textwrap.dedent(
        f"""\
        From: Mail Delivery System <MAILER-DAEMON@mx{n % 7}.example>
        To: {CENTRE}
        Subject: Undelivered Mail Returned to Sender
        Message-ID: <dsn.{n}@mx.example>
        Date: Tue, 24 Nov 2026 10:05:00 +0100
        Auto-Submitted: auto-replied
        MIME-Version: 1.0
        Content-Type: multipart/report; report-type=delivery-status; boundary="b{n}"

        --b{n}
        Content-Type: text/plain

        Delivery to the recipient failed.

        --b{n}
        Content-Type: message/delivery-status

        Reporting-MTA: dns; mx{n % 7}.example

        Final-Recipient: rfc822; someone@nordby-skole.example
        Action: {action}
        Status: {status}

        --b{n}
        Content-Type: text/rfc822-headers

        From: Servicesenteret <{CENTRE}>
        Message-ID: {message_id}
        Subject: [SSC#1] Vi har mottatt henvendelsen din

        --b{n}--
        """
    ).encode()


def test_bounce_storm_opens_nothing_sends_nothing_and_fails_only_the_named_mail(tmp_path: Path) -> None:
    """Hundreds of DSNs, for our receipts and for mail we never sent, open no case, send nothing and fail only the named rows."""
    relay = RecordingRelay().start()
    runtime = Runtime(
        load_config(write_config(tmp_path, relay_port=relay.port, receipt_limit_per_hour="100"))
    )
    try:
        for n in range(20):
            process(runtime, mail(subject=f"Nettet er nede på rom {n}"), "smtp")
        Deliverer(runtime.config, runtime.store).flush()
        receipts = [
            r["message_id"]
            for r in runtime.store.query("SELECT message_id FROM outbox WHERE kind = 'receipt' ORDER BY id")
        ]
        outbox, cases, relayed = count(runtime, "SELECT count(*) FROM outbox"), 20, len(relay.received)
        storm = [dsn(receipts[n % 10], n=n) for n in range(120)]  # the first ten, several times each
        storm += [dsn(receipts[10 + n % 5], "delayed", n=1000 + n) for n in range(30)]  # only delayed
        storm += [dsn(f"<never.{n}@elsewhere.example>", n=2000 + n) for n in range(150)]
        outcomes = {process(runtime, raw, "smtp", envelope_from="").outcome for raw in storm}
        Deliverer(runtime.config, runtime.store).flush()
        assert outcomes == {"ignored"}
        assert count(runtime, "SELECT count(*) FROM cases") == cases
        assert count(runtime, "SELECT count(*) FROM outbox") == outbox and len(relay.received) == relayed
        status = dict(
            runtime.store.conn.execute("SELECT message_id, status FROM outbox WHERE kind = 'receipt'")
        )
        assert [status[mid] for mid in receipts] == ["failed"] * 10 + ["sent"] * 10
        assert count(runtime, "SELECT count(*) FROM messages WHERE disposition = 'automated'") == len(storm)
    finally:
        runtime.close()
        relay.stop()
