"""End to end over real SMTP: mail in, case in SQLite, receipt out through a recording relay."""

from __future__ import annotations

import json

from gateway.ops.queries import show_case
from gateway.ops.server import Server
from gateway.outbox.queue import Deliverer
from tests.support import RecordingRelay, mail, smtp_send, wait_for

KARI = "kari.nordmann@nordby-skole.example"


def _cases(server: Server) -> list[dict[str, object]]:
    return server.runtime.store.query("SELECT * FROM cases ORDER BY id")


def test_contact_mail_opens_case_and_gets_tagged_receipt(server: Server, relay: RecordingRelay) -> None:
    """A registered contact's mail becomes a case and the receipt names it in the subject tag."""
    code, _ = smtp_send(server.listener.address[1], mail(message_id="<first@nordby-skole.example>"))
    assert code == 250
    cases = _cases(server)
    assert len(cases) == 1 and cases[0]["organization"] == "nordby-skole"
    assert cases[0]["category"] == "incident"
    receipts = wait_for(lambda: relay.to(KARI), what="receipt at the relay")
    receipt = receipts[0].message
    assert receipt["Subject"].startswith("[SSC#1] ")
    assert receipt["In-Reply-To"] == "<first@nordby-skole.example>"
    assert receipt["Auto-Submitted"] == "auto-replied"
    assert receipt["X-Gateway-Loop"] == "kontakt@service.example"
    assert receipt["From"].addresses[0].addr_spec == "kontakt@service.example"
    assert "SSC#1" in receipts[0].body and "Nordby skole" in receipts[0].body


def test_reply_to_receipt_threads_into_same_case(server: Server, relay: RecordingRelay) -> None:
    """A customer's reply to the receipt (In-Reply-To its Message-ID) joins the case, with no new receipt."""
    port = server.listener.address[1]
    smtp_send(port, mail())
    receipt = wait_for(lambda: relay.to(KARI), what="receipt")[0].message
    reply = mail(
        subject=f"SV: {receipt['Subject']}",
        body="Det gjelder også rom 205.\n",
        headers={"In-Reply-To": receipt["Message-ID"]},
    )
    assert smtp_send(port, reply)[0] == 250
    assert len(_cases(server)) == 1
    case = show_case(server.runtime.store, 1)
    assert case is not None
    inbound = [m for m in case["messages"] if m["direction"] == "in"]
    assert len(inbound) == 2
    reasons = [e["reason"] for e in case["history"] if e["action"] == "message-added"]
    assert reasons == [f"reply to {receipt['Message-ID']}"]
    Deliverer(server.runtime.config, server.runtime.store).flush()
    assert len(relay.to(KARI)) == 1


def test_tag_only_follow_up_from_same_organisation_joins_case(server: Server, relay: RecordingRelay) -> None:
    """Another contact of the same organisation writing with just the tag lands in the same case."""
    port = server.listener.address[1]
    smtp_send(port, mail())
    follow_up = mail(
        sender="IT Nordby <it@nordby-skole.example>",
        subject="[SSC#1] mer info",
        body="Switchen i kjelleren blinker oransje.\n",
    )
    smtp_send(port, follow_up)
    assert len(_cases(server)) == 1
    events = server.runtime.store.query("SELECT reason FROM events WHERE action = 'message-added'")
    assert events[0]["reason"] == "subject tag from a contact of nordby-skole"


def test_forged_tag_from_stranger_does_not_append(server: Server, relay: RecordingRelay) -> None:
    """A tag from someone who may not write to the case never appends; the stranger is held instead."""
    port = server.listener.address[1]
    smtp_send(port, mail())
    smtp_send(port, mail(sender="Mallory <m@evil.example>", subject="[SSC#1] close this please"))
    case = show_case(server.runtime.store, 1)
    assert case is not None and len([m for m in case["messages"] if m["direction"] == "in"]) == 1
    held = server.runtime.store.query("SELECT from_addr, reason FROM messages WHERE disposition = 'held'")
    assert held[0]["from_addr"] == "m@evil.example" and "unknown-sender" in held[0]["reason"]


def test_forged_tag_from_other_customer_opens_own_case(server: Server, relay: RecordingRelay) -> None:
    """A contact of another organisation using someone else's tag gets a case of their own."""
    port = server.listener.address[1]
    smtp_send(port, mail())
    smtp_send(
        port, mail(sender="Ola Bakken <ola.bakken@fjellvik.kommune.example>", subject="[SSC#1] Spørsmål")
    )
    cases = _cases(server)
    assert [c["organization"] for c in cases] == ["nordby-skole", "fjellvik-kommune"]


def test_auto_reply_is_stored_without_receipt(server: Server, relay: RecordingRelay) -> None:
    """An out-of-office answer is kept but never acknowledged."""
    port = server.listener.address[1]
    ooo = mail(subject="Fraværsmelding: Nettet er nede", headers={"Auto-Submitted": "auto-replied"})
    assert smtp_send(port, ooo)[0] == 250
    rows = server.runtime.store.query("SELECT disposition, reason FROM messages")
    assert rows == [{"disposition": "automated", "reason": "Auto-Submitted: auto-replied"}]
    assert Deliverer(server.runtime.config, server.runtime.store).flush().sent == 0
    assert relay.received == []
    assert server.runtime.store.query("SELECT id FROM outbox") == []


def test_same_message_twice_is_stored_once(server: Server, relay: RecordingRelay) -> None:
    """Delivering one Message-ID twice keeps one message, one case and one receipt."""
    port = server.listener.address[1]
    raw = mail(message_id="<twice@nordby-skole.example>")
    assert smtp_send(port, raw)[0] == 250
    code, text = smtp_send(port, raw)
    assert code == 250 and b"duplicate" in text
    store = server.runtime.store
    assert store.one("SELECT count(*) AS n FROM messages")["n"] == 1
    assert store.one("SELECT count(*) AS n FROM outbox WHERE kind = 'receipt'")["n"] == 1


def test_same_message_id_with_other_bytes_is_kept_but_not_acted_on(
    server: Server, relay: RecordingRelay
) -> None:
    """A second copy with the same Message-ID but other bytes is stored on the case; no new case or receipt."""
    port = server.listener.address[1]
    first = mail(message_id="<route@nordby-skole.example>")
    second = b"Received: from backup-mx.example by mx.example; Tue, 24 Nov 2026 10:01:00 +0100\r\n" + first
    assert smtp_send(port, first)[0] == 250
    assert smtp_send(port, second)[0] == 250
    assert smtp_send(port, second)[0] == 250  # the same bytes again: nothing more to keep
    store = server.runtime.store
    rows = store.query("SELECT disposition, case_id, sha256 FROM messages ORDER BY id")
    assert [(r["disposition"], r["case_id"]) for r in rows] == [("case", 1), ("duplicate", 1)]
    kept = store.one("SELECT raw FROM raw_messages WHERE sha256 = ?", (rows[1]["sha256"],))
    assert bytes(kept["raw"]) == second
    assert store.one("SELECT count(*) AS n FROM outbox WHERE kind = 'receipt'")["n"] == 1


def test_relay_down_delays_receipt_until_it_is_back(server: Server, relay: RecordingRelay) -> None:
    """With the relay stopped the receipt waits in the outbox, and is delivered once it is back."""
    relay.stop()
    smtp_send(server.listener.address[1], mail())
    store = server.runtime.store
    receipt = "SELECT status, attempts, last_error FROM outbox WHERE kind = 'receipt'"
    wait_for(lambda: store.one(receipt)["attempts"] >= 1, what="a failed attempt")
    row = store.one(receipt)
    assert row["status"] == "queued" and "relay unavailable" in row["last_error"]
    relay.start()
    store.conn.execute("UPDATE outbox SET next_attempt_at = ''")  # the retry time has come
    server.outbox.wake()
    wait_for(lambda: relay.to(KARI), what="receipt after the relay came back")
    # A delivery is recorded just after the relay's 250, so the row may say "sent" a moment later.
    wait_for(lambda: store.one(receipt)["status"] == "sent", what="receipt recorded as sent")
    assert len(relay.to(KARI)) == 1


def test_relay_4xx_defers_and_5xx_fails_visibly(config, relay: RecordingRelay) -> None:  # type: ignore[no-untyped-def]
    """A 451 from the relay defers the mail with backoff; a 550 marks it failed and shows it."""
    from gateway.pipeline.process import process
    from gateway.runtime import Runtime

    runtime = Runtime(config)
    process(runtime, mail(message_id="<a@x.example>"), "test")  # queues the receipt, then the agents' notice
    relay.errors += ["451 4.3.0 try later", "550 5.1.1 no such user"]
    report = Deliverer(config, runtime.store).flush()
    assert (report.sent, report.deferred, report.failed) == (0, 1, 1)
    rows = {
        r["kind"]: r
        for r in runtime.store.query(
            "SELECT kind, status, attempts, last_error, next_attempt_at, created_at FROM outbox"
        )
    }
    assert rows["receipt"]["status"] == "queued" and rows["receipt"]["last_error"].startswith("451")
    assert rows["receipt"]["next_attempt_at"] > rows["receipt"]["created_at"]
    assert rows["agent-notify"]["status"] == "failed" and rows["agent-notify"]["last_error"].startswith("550")
    runtime.close()


def test_outbox_retry_queues_failed_mail_again_all_or_none(
    config_path, relay: RecordingRelay, capsys
) -> None:  # type: ignore[no-untyped-def]
    """`gateway outbox retry ID` re-queues 5xx-failed mail with its history noted; a bad id changes nothing."""
    from gateway.cli.main import main
    from gateway.core.config import load_config
    from gateway.pipeline.process import process
    from gateway.runtime import Runtime

    runtime = Runtime(load_config(config_path))
    process(runtime, mail(message_id="<retry@x.example>"), "test")  # the receipt, then the agents' notice
    relay.errors += ["550 5.1.1 no such user"] * 2
    assert Deliverer(runtime.config, runtime.store).flush().failed == 2
    ids = {r["kind"]: r for r in runtime.store.query("SELECT id, kind, case_id FROM outbox")}
    notice, receipt = ids["agent-notify"]["id"], ids["receipt"]["id"]
    cli = ["--config", str(config_path), "outbox", "retry"]

    def status(row_id: int) -> str:
        return str(runtime.store.one("SELECT status FROM outbox WHERE id = ?", (row_id,))["status"])

    assert main([*cli, str(notice), "999999"]) == 66
    assert status(notice) == "failed"
    assert main([*cli, str(notice)]) == 0
    assert f"queued again: outbox {notice} (agent-notify)" in capsys.readouterr().out
    row = runtime.store.one("SELECT status, attempts FROM outbox WHERE id = ?", (notice,))
    assert row == {"status": "queued", "attempts": 0}
    event = runtime.store.one("SELECT case_id, reason FROM events WHERE action = 'outbox-retry'")
    assert event["case_id"] == ids["agent-notify"]["case_id"] and "550 5.1.1 no such user" in event["reason"]
    # One that is not failed (the notice is queued now) refuses the whole command.
    assert main([*cli, str(receipt), str(notice)]) == 65
    assert "only failed mail is retried" in capsys.readouterr().err
    assert status(receipt) == "failed"

    assert Deliverer(runtime.config, runtime.store).flush().sent == 1
    assert status(notice) == "sent" and len(relay.received) == 1
    runtime.close()


def test_cases_show_json_has_the_documented_fields(
    server: Server, relay: RecordingRelay, config_path
) -> None:  # type: ignore[no-untyped-def]
    """`gateway cases show --json` carries the case fields and both directions of mail."""
    import subprocess
    import sys

    smtp_send(server.listener.address[1], mail())
    wait_for(lambda: relay.to(KARI), what="receipt")
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(config_path), "cases", "show", "1", "--json"],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    case = json.loads(out)
    for key in ("id", "subject", "status", "category", "priority", "organization", "requester", "created_at"):
        assert key in case
    directions = [m["direction"] for m in case["messages"]]
    assert directions[0] == "in" and directions.count("out") == 2  # the receipt and the agents' notice
    for message in case["messages"]:
        assert {"message_id", "direction", "from", "to", "subject", "body"} <= set(message)
    assert all(m["subject"].startswith("[SSC#1]") for m in case["messages"][1:])


def test_store_is_wal_with_full_sync(server: Server) -> None:
    """The store runs in WAL mode with synchronous=FULL, as the durability promise needs."""
    conn = server.runtime.store.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
