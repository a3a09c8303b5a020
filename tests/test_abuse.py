"""Bounded under abuse: our own faults answer 4xx, idle and surplus connections are dropped."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from gateway.core.config import load_config
from gateway.intake import smtp as intake
from gateway.intake.connections import RateLimitedErrors
from gateway.ops.server import Server
from tests.support import RecordingRelay, mail, smtp_send, wait_for, write_config


@pytest.fixture
def local_server(tmp_path: Path, relay: RecordingRelay) -> Iterator[Server]:
    """`gateway serve` with its pipeline in this process, so a test can break a part of it."""
    srv = Server(load_config(write_config(tmp_path, relay_port=relay.port, intake_process=False)))
    srv.start()
    yield srv
    srv.stop()


def _broken(*args: object, **kwargs: object) -> None:
    raise AttributeError("'NoneType' object has no attribute 'split'")


@pytest.mark.parametrize("part", ["unstuffed", "process_batch"])
def test_a_failure_inside_data_answers_451_and_the_next_message_is_stored(
    local_server: Server, monkeypatch: pytest.MonkeyPatch, part: str
) -> None:
    """An exception in the DATA reader or the pipeline answers 451, and the session goes on."""
    port = local_server.listener.address[1]
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo()
        with monkeypatch.context() as patch:
            patch.setattr(intake, part, _broken)
            client.mail("sender@client.example")
            client.rcpt("kontakt@service.example")
            code, text = client.data(mail())
        assert code == 451, text
        client.mail("sender@client.example")
        client.rcpt("kontakt@service.example")
        code, text = client.data(mail())
        assert code == 250, text


def test_a_failure_reading_data_answers_451_not_500(
    local_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception while the message is still arriving answers 451, where aiosmtpd said 500."""
    monkeypatch.setattr(intake.IntakeSMTP, "_receive", _async_broken)
    code, text = smtp_send(local_server.listener.address[1], mail())
    assert code == 451, text


async def _async_broken(self: object) -> None:
    raise AttributeError("'NoneType' object has no attribute 'readuntil'")


def _smtp_config(tmp_path: Path, relay: RecordingRelay, **smtp: object) -> Path:
    """A config whose [smtp] section has the given keys, pipeline in this process."""
    path = write_config(tmp_path, relay_port=relay.port, intake_process=False)
    keys = "".join(f"{key} = {value}\n" for key, value in smtp.items())
    path.write_text(path.read_text().replace("[smtp]\n", "[smtp]\n" + keys, 1))
    return path


@pytest.fixture
def started(tmp_path: Path, relay: RecordingRelay) -> Iterator[Callable[..., Server]]:
    """Start `gateway serve` in this process with [smtp] keys of the test's choosing."""
    servers: list[Server] = []

    def start(**smtp: object) -> Server:
        srv = Server(load_config(_smtp_config(tmp_path, relay, **smtp)))
        srv.start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


def _connect(port: int, source: str = "127.0.0.1") -> tuple[socket.socket, bytes]:
    """A raw client connection from `source` and the first line the server says."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return sock, sock.makefile("rb").readline()


def _until_closed(sock: socket.socket) -> bytes:
    """Everything the server says until it closes the connection (the socket's timeout bounds it)."""
    said = b""
    while chunk := sock.recv(4096):
        said += chunk
    return said


def test_a_silent_client_is_told_421_and_hung_up_on(started: Callable[..., Server]) -> None:
    """A connection that says nothing past smtp.idle_timeout_seconds gets 421 and is closed."""
    srv = started(idle_timeout_seconds=0.3)
    sock, greeting = _connect(srv.listener.address[1])
    with sock:
        assert greeting.startswith(b"220")
        assert _until_closed(sock).startswith(b"421 4.4.2")
    code, text = smtp_send(srv.listener.address[1], mail())  # a client that talks is unaffected
    assert code == 250, text


def test_connections_past_the_caps_get_421_and_room_comes_back(started: Callable[..., Server]) -> None:
    """Past the cap per client address and in total, new connections get 421 until one closes."""
    srv = started(max_connections=3, max_connections_per_client=2)
    port = srv.listener.address[1]
    first, greeting = _connect(port, "127.0.0.1")
    second, _ = _connect(port, "127.0.0.1")
    assert greeting.startswith(b"220")
    crowded, refusal = _connect(port, "127.0.0.1")
    assert refusal.startswith(b"421") and b"your address" in refusal
    assert _until_closed(crowded) == b""
    other, greeting = _connect(port, "127.0.0.2")
    assert greeting.startswith(b"220")
    last, refusal = _connect(port, "127.0.0.3")
    assert refusal.startswith(b"421") and b"your address" not in refusal
    first.close()
    wait_for(lambda: srv.listener.handler.connections.count == 2, what="the closed connection to count out")
    again, greeting = _connect(port, "127.0.0.3")
    assert greeting.startswith(b"220")
    for sock in (second, crowded, other, last, again):
        sock.close()


def test_data_past_the_bytes_in_flight_is_asked_to_retry(
    started: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one message holds most of smtp.max_bytes_in_flight, the next gets 451, then 250 later."""
    srv = started(max_bytes_in_flight=1048576)
    gate, entered = threading.Event(), threading.Event()
    real = intake.process_batch

    def held(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        assert gate.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(intake, "process_batch", held)
    port = srv.listener.address[1]
    big = mail(body="Stort vedlegg.\n" + ("x" * 76 + "\n") * 8000)  # about 630 KB
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(smtp_send, port, big)
        wait_for(lambda: entered.is_set() or first.done(), what="the first message in the pipeline")
        assert entered.is_set(), first.result()
        code, text = smtp_send(port, big)
        assert (code, text[:9]) == (451, b"4.3.1 Too"), text
        gate.set()
        assert first.result()[0] == 250
    assert srv.listener.handler.budget.held == 0
    code, text = smtp_send(port, big)
    assert code == 250, text


def test_repeated_listener_errors_are_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    """A thousand failed accepts in a second make one log line, then a count once the minute is up."""
    now = [0.0]
    errors = RateLimitedErrors(clock=lambda: now[0])
    loop = asyncio.new_event_loop()
    try:
        for _ in range(1000):
            errors(
                loop,
                {
                    "message": "socket.accept() out of system resource",
                    "exception": OSError(24, "Too many open files"),
                },
            )
            now[0] += 0.001
        now[0] = 61.0
        errors(
            loop,
            {
                "message": "socket.accept() out of system resource",
                "exception": OSError(24, "Too many open files"),
            },
        )
    finally:
        loop.close()
    lines = [r.getMessage() for r in caplog.records if "out of system resource" in r.getMessage()]
    assert len(lines) == 2
    assert "999 more like it" in lines[1]


@pytest.mark.parametrize("cut_off", ["client hangs up", "idle past the timeout"])
def test_data_cut_off_midway_gives_its_bytes_back(started: Callable[..., Server], cut_off: str) -> None:
    """A DATA that never ends frees its share of smtp.max_bytes_in_flight, so it cannot starve later mail."""
    srv = started(max_bytes_in_flight=1048576, idle_timeout_seconds=1)
    port = srv.listener.address[1]
    handler = srv.listener.handler
    sock, greeting = _connect(port)
    with sock:
        assert greeting.startswith(b"220")
        sock.sendall(
            b"EHLO client.example\r\nMAIL FROM:<a@client.example>\r\nRCPT TO:<kontakt@service.example>\r\n"
        )
        sock.sendall(b"DATA\r\n" + mail(body="Stort vedlegg.\n" + ("x" * 76 + "\n") * 8000))  # no lone dot
        wait_for(lambda: handler.budget.held > 300_000, what="the message's bytes counted in flight")
        if cut_off == "idle past the timeout":
            assert b"421 4.4.2" in _until_closed(sock)
    wait_for(lambda: handler.connections.count == 0, what="the connection to count out")
    wait_for(lambda: handler.budget.held == 0, timeout=5, what="the unfinished message's bytes given back")
    big = mail(body="Stort vedlegg.\n" + ("x" * 76 + "\n") * 8000)  # about 630 KB: needs the room
    code, text = smtp_send(port, big)
    assert code == 250, text
