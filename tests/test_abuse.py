"""Bounded under abuse: our own faults answer 4xx, idle and surplus connections are dropped."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.core.config import load_config
from gateway.intake import smtp as intake
from gateway.ops.server import Server
from tests.support import RecordingRelay, mail, smtp_send, write_config


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
