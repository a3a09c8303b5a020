"""Tests proving the private Dovecot harness in tests/imapserver.py really works."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.imapserver import Dovecot, dovecot_available, running_dovecot

pytestmark = pytest.mark.skipif(
    not dovecot_available(),
    reason="Dovecot 2.3 is not installed (run .ci/install-dovecot as root to install it)",
)

FIRST = (
    b"From: Customer <customer@example.org>\r\n"
    b"To: Service Centre <centre@example.net>\r\n"
    b"Subject: Router down at site 7\r\n"
    b"Message-ID: <first@example.org>\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"The router at site 7 is down. Bl\xc3\xa5b\xc3\xa6r.\r\n"
    b"  Indented line, trailing spaces   \r\n"
)
SECOND = b"Subject: Second\r\nMessage-ID: <second@example.org>\r\n\r\nTwo\r\n"


def _greeting(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        return sock.makefile("rb").readline()


def _login_and_capability(server: Dovecot) -> tuple[set[str], set[str]]:
    """Return (capabilities in the LOGIN OK response code, fresh CAPABILITY answer)."""
    client = server.connect(login=False)
    try:
        imap = client._imap
        typ, _data = imap.login(server.username, server.password)
        assert typ == "OK"
        # imaplib files the OK response's [CAPABILITY ...] code under untagged_responses.
        codes = imap.untagged_responses.pop("CAPABILITY", [])
        assert codes, "Dovecot sends post-login capabilities in the LOGIN response"
        at_login = set(codes[-1].decode().upper().split())
        typ, data = imap.capability()
        assert typ == "OK"
        fresh = set(data[-1].decode().upper().split())
        return at_login, fresh
    finally:
        client.logout()


def test_append_list_fetch_round_trip_exact_bytes(tmp_path: Path) -> None:
    """Appended messages come back with their exact bytes under the UIDs APPEND reported."""
    with running_dovecot(tmp_path) as server:
        first = server.append("INBOX", FIRST)
        second = server.append("INBOX", SECOND, flags=[r"\Seen"])
        filed = server.append("Cases/Open", SECOND)

        assert server.folder_uids("INBOX") == [first, second]
        assert server.fetch_all("INBOX") == {first: FIRST, second: SECOND}
        assert server.fetch_all("Cases/Open") == {filed: SECOND}
        assert {"INBOX", "Cases/Open"} <= set(server.folders())
        flags = server.folder_flags("INBOX")
        assert r"\Seen" in flags[second]
        assert r"\Seen" not in flags[first], "fetch_all must not mark messages seen"


def test_move_advertised_by_default(tmp_path: Path) -> None:
    """By default MOVE and UIDPLUS are advertised after login."""
    with running_dovecot(tmp_path) as server:
        at_login, fresh = _login_and_capability(server)
        assert {"MOVE", "UIDPLUS", "IDLE"} <= fresh
        assert {"MOVE", "UIDPLUS"} <= at_login
        assert "MOVE" in server.capabilities()


def test_move_absent_when_disabled_but_uidplus_present(tmp_path: Path) -> None:
    """With move_capability=False MOVE is never advertised while UIDPLUS and IDLE are."""
    with running_dovecot(tmp_path, move_capability=False) as server:
        greeting = _greeting(server.port)
        assert greeting.startswith(b"* OK")
        assert b"MOVE" not in greeting.upper().split()
        at_login, fresh = _login_and_capability(server)
        for caps in (at_login, fresh):
            assert "MOVE" not in caps
            assert {"UIDPLUS", "IDLE", "IMAP4REV1"} <= caps


def test_copy_store_expunge_works_without_move(tmp_path: Path) -> None:
    """Without MOVE a client can still move mail by COPY, STORE \\Deleted and UID EXPUNGE."""
    with running_dovecot(tmp_path, move_capability=False) as server:
        keep = server.append("INBOX", FIRST)
        moving = server.append("INBOX", SECOND)
        server.create_folder("Done")
        with server.client() as client:
            client.select_folder("INBOX")
            client.copy([moving], "Done")
            client.add_flags([moving], [rb"\Deleted"])
            client.uid_expunge([moving])
        assert server.folder_uids("INBOX") == [keep]
        assert list(server.fetch_all("Done").values()) == [SECOND]


def test_restart_keeps_messages_and_port(tmp_path: Path) -> None:
    """A restart serves the same port and the same messages under the same UIDs."""
    with running_dovecot(tmp_path) as server:
        uid = server.append("INBOX", FIRST)
        port = server.port
        validity = server.uidvalidity()
        server.restart()
        assert server.running
        assert server.port == port
        assert _greeting(port).startswith(b"* OK")
        assert server.fetch_all("INBOX") == {uid: FIRST}
        assert server.uidvalidity() == validity


def test_change_uidvalidity_gives_new_value_and_keeps_messages(tmp_path: Path) -> None:
    """change_uidvalidity() yields a different UIDVALIDITY and the same message bytes."""
    with running_dovecot(tmp_path) as server:
        server.append("INBOX", FIRST)
        server.append("INBOX", SECOND)
        server.append("Archive", SECOND)
        before = server.uidvalidity("INBOX")
        archive_before = server.uidvalidity("Archive")

        after = server.change_uidvalidity("INBOX")

        assert after != before
        assert server.uidvalidity("INBOX") == after
        assert sorted(server.fetch_all("INBOX").values()) == sorted([FIRST, SECOND])
        assert server.uidvalidity("Archive") == archive_before
        assert server.change_uidvalidity("Archive") != archive_before


def test_two_instances_run_side_by_side(tmp_path: Path) -> None:
    """Two instances run at once on different ports with separate mail stores."""
    with (
        running_dovecot(tmp_path / "one") as one,
        running_dovecot(tmp_path / "two", move_capability=False) as two,
    ):
        assert one.port != two.port
        one.append("INBOX", FIRST)
        two.append("INBOX", SECOND)
        assert list(one.fetch_all("INBOX").values()) == [FIRST]
        assert list(two.fetch_all("INBOX").values()) == [SECOND]
        one.stop()
        assert two.folder_uids("INBOX") == [1]


def test_idle_reports_new_mail_promptly(tmp_path: Path) -> None:
    """A client in IDLE is told about a message appended by another connection."""
    with running_dovecot(tmp_path) as server, server.client() as client:
        client.select_folder("INBOX")
        client.idle()
        try:
            server.append("INBOX", FIRST)
            responses = client.idle_check(timeout=5)
        finally:
            client.idle_done()
        assert (1, b"EXISTS") in responses


def test_stop_frees_port_and_instance_can_start_again(tmp_path: Path) -> None:
    """After stop() nothing listens on the port and start() brings the server back."""
    server = Dovecot(tmp_path)
    try:
        server.start()
        server.append("INBOX", FIRST)
        server.stop()
        assert not server.running
        with pytest.raises(OSError):
            _greeting(server.port)
        server.start()
        assert list(server.fetch_all("INBOX").values()) == [FIRST]
    finally:
        server.close()
