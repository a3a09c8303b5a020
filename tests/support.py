"""Test helpers: a recording SMTP relay, free ports, config files and condition waits."""

from __future__ import annotations

import smtplib
import socket
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from email.policy import default
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A loopback port nobody is listening on (aiosmtpd cannot bind port 0 itself)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll a condition until it is truthy; fail the test with `what` when the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> Message:
        return message_from_bytes(self.raw, policy=default)

    @property
    def body(self) -> str:
        part = self.message.get_body(("plain",))
        return part.get_content() if part is not None else ""  # type: ignore[no-any-return, union-attr]


@dataclass
class RecordingRelay:
    """A real aiosmtpd server that keeps what it is sent; queue error codes to make it refuse."""

    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            if self.errors:
                return self.errors.pop(0)
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
            )
        return "250 OK recorded"

    def start(self) -> RecordingRelay:
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, decode_data=False)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def to(self, address: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if address in r.rcpt_tos]


def write_config(
    tmp: Path,
    relay_port: int | None = None,
    smtp_port: int | None = None,
    intake_process: bool = True,
    **extra: str,
) -> Path:
    """A gateway.toml in tmp, using the repo's registry, rules and templates.

    intake_process=False keeps serve's pipeline in the test's own process, for tests that
    replace a part of the Runtime that a worker process would not see. For DKIM keys, use
    write_trusting_config instead: its keys file reaches the workers.
    """
    relay = (
        f"[relay]\nhost = '127.0.0.1'\nport = {relay_port}\nretry_initial_seconds = 30\n"
        if relay_port
        else ""
    )
    service_extra = "".join(f"{k} = {v}\n" for k, v in extra.items())
    text = textwrap.dedent(
        """\
        [service]
        address = "kontakt@service.example"
        name = "Servicesenteret"
        case_prefix = "SSC"
        language = "nb"
        timezone = "Europe/Oslo"
        phone = "73557900"
        on_call_address = "beredskap@service.example"
        second_line_address = "andrelinje@service.example"
        """
    )
    text += service_extra + textwrap.dedent(
        f"""
        [storage]
        path = "{tmp / "var"}"

        [smtp]
        host = "127.0.0.1"
        port = {smtp_port or free_port()}
        max_message_size = 1048576
        intake_process = {"true" if intake_process else "false"}

        [registry]
        file = "{REPO / "data" / "contacts.toml"}"

        [paths]
        rules = "{REPO / "rules"}"
        templates = "{REPO / "templates"}"
        """
    )
    path = tmp / "gateway.toml"
    path.write_text(text + relay, encoding="utf-8")
    return path


def mail(
    sender: str = "Kari Nordmann <kari.nordmann@nordby-skole.example>",
    subject: str = "Nettet er nede i 2. etasje",
    body: str = "Hei,\n\ningen på rom 204 får koblet seg på nettet siden i morges.\n\nHilsen Kari\n",
    message_id: str | None = None,
    headers: dict[str, str] | None = None,
    to: str = "kontakt@service.example",
) -> bytes:
    """A plain UTF-8 mail as a customer's client would send it, CRLF line ends."""
    lines = [
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {subject}",
        f"Message-ID: {message_id or f'<{uuid.uuid4().hex}@client.example>'}",
        "Date: Tue, 24 Nov 2026 10:00:00 +0100",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n" + body.replace("\n", "\r\n")).encode("utf-8")


def smtp_send(
    port: int, raw: bytes, mail_from: str = "sender@client.example", rcpt: str = "kontakt@service.example"
) -> tuple[int, bytes]:
    """Send through SMTP and return the server's answer to DATA (code, text)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo()
        code, text = client.mail(mail_from)
        assert code == 250, text
        code, text = client.rcpt(rcpt)
        if code != 250:
            return code, text
        return client.data(raw)


def dkim_keypair() -> tuple[bytes, bytes]:
    """A fresh RSA key (PEM) and its DKIM TXT record, made offline with openssl."""
    import base64
    import shutil
    import subprocess

    import pytest

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a DKIM key")
    key = subprocess.run(["openssl", "genrsa", "2048"], capture_output=True, check=True).stdout
    der = subprocess.run(
        ["openssl", "rsa", "-pubout", "-outform", "DER"], input=key, capture_output=True, check=True
    ).stdout
    return key, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def write_trusting_config(tmp: Path, relay_port: int, keys: dict[str, bytes], sections: str = "") -> Path:
    """A config whose every process (serve's workers too) reads DKIM keys from a zone file.

    keys maps `selector._domainkey.domain` to its TXT record; the MTA's authserv-id is
    mx.service.example; `sections` is more TOML appended as it is.
    """
    zone = tmp / "dkim-keys.zone"
    zone.write_text("".join(f'{name}. TXT "{record.decode("ascii")}"\n' for name, record in keys.items()))
    path = write_config(tmp, relay_port=relay_port)
    with path.open("a", encoding="utf-8") as out:
        out.write(
            '\n[auth]\nauthserv_id = "mx.service.example"\ndkim_keys_file = "dkim-keys.zone"\n' + sections
        )
    return path
