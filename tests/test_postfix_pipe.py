"""A real Postfix hands mail to `gateway deliver` through its pipe transport: delivered, deferred then delivered, bounced."""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.core.config import load_config
from gateway.store.database import open_store
from tests.support import REPO, free_port, mail, wait_for, write_config

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
POSTQUEUE = shutil.which("postqueue") or "/usr/sbin/postqueue"
NOBODY = 65534
# The pipe runs as `nobody`, who cannot reach this venv's interpreter under /root: Debian's own
# Python 3.11 with the venv's libraries and this checkout's code does the same job.
SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
SYSTEM_PYTHON = f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"

# Every service a Postfix instance needs, none chrooted (the instance lives in a temporary folder).
MASTER = """\
{port} inet  n - n - - smtpd
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
gateway   unix - n n - 1 pipe
  flags=Rq user=nobody:nogroup argv=/usr/bin/env PYTHONPATH={pythonpath} {python} -m gateway --config {config} deliver --sender ${{sender}}
"""


@dataclass
class Instance:
    folder: Path
    port: int
    config: Path
    gateway_config: Path

    @property
    def log(self) -> str:
        path = self.folder / "maillog"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def send(self, raw: bytes) -> None:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
            client.sendmail("kari.nordmann@nordby-skole.example", ["kontakt@service.example"], raw)


def _main_cf(folder: Path) -> str:
    return textwrap.dedent(
        f"""\
        compatibility_level = 3.6
        queue_directory = {folder / "queue"}
        data_directory = {folder / "data"}
        maillog_file = {folder / "maillog"}
        maillog_file_prefixes = {folder}
        mail_owner = postfix
        setgid_group = postdrop
        myhostname = mx.service.example
        mydestination = service.example
        local_recipient_maps =
        inet_interfaces = 127.0.0.1
        inet_protocols = ipv4
        mynetworks = 127.0.0.0/8
        recipient_delimiter = +
        transport_maps = inline:{{ kontakt@service.example=gateway: }}
        gateway_destination_recipient_limit = 1
        # Nothing leaves this test: bounce notices and everything else end at the error transport.
        local_transport = error:no local mail in this test
        default_transport = error:no outside mail in this test
        smtputf8_enable = no
        biff = no
        """
    )


@pytest.fixture
def postfix() -> Iterator[Instance]:
    if not Path(POSTFIX).exists():
        pytest.skip("postfix is not installed (bash .ci/install-postfix installs it as root)")
    if os.geteuid() != 0 or not Path(SYSTEM_PYTHON).exists():
        pytest.skip(f"a private Postfix instance needs root and {SYSTEM_PYTHON}")
    folder = Path(tempfile.mkdtemp(prefix="gateway-postfix-"))
    folder.chmod(0o755)
    gateway_config = write_config(folder)
    storage = folder / "var"
    storage.mkdir()
    os.chown(storage, NOBODY, NOBODY)
    config = folder / "postfix"
    config.mkdir()
    (folder / "queue").mkdir()
    (folder / "data").mkdir()
    shutil.chown(folder / "data", "postfix")
    port = free_port()
    (config / "main.cf").write_text(_main_cf(folder), encoding="utf-8")
    (config / "master.cf").write_text(
        MASTER.format(
            port=f"127.0.0.1:{port}",
            pythonpath=f"{REPO}:{SITE}",
            python=SYSTEM_PYTHON,
            config=gateway_config,
        ),
        encoding="utf-8",
    )
    started = subprocess.run(
        [POSTFIX, "-c", str(config), "start"], capture_output=True, text=True, timeout=120
    )
    assert started.returncode == 0, started.stderr
    instance = Instance(folder, port, config, gateway_config)
    try:
        wait_for(lambda: _answers(port), what="postfix listening")
        yield instance
    finally:
        subprocess.run([POSTFIX, "-c", str(config), "stop"], capture_output=True, timeout=120)
        if os.environ.get("KEEP_POSTFIX") is None:
            shutil.rmtree(folder, ignore_errors=True)


def _answers(port: int) -> bool:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
            return client.noop()[0] == 250
    except OSError:
        return False


def _stored(instance: Instance, message_id: str) -> bool:
    store = open_store(load_config(instance.gateway_config).storage)
    try:
        return store.one("SELECT 1 FROM messages WHERE message_id = ?", (message_id,)) is not None
    finally:
        store.close()


def _log_has(instance: Instance, *words: str) -> bool:
    return any(all(w in line for w in words) for line in instance.log.splitlines())


def test_postfix_pipe_delivers_defers_and_bounces(postfix: Instance) -> None:
    """Exit 0 is delivered, 75 is deferred and delivered on the retry, 65 is bounced to the sender."""
    postfix.send(mail(message_id="<levert@nordby-skole.example>"))
    wait_for(lambda: _log_has(postfix, "status=sent", "delivered via gateway service"), what="delivered")
    assert _stored(postfix, "<levert@nordby-skole.example>")

    good = postfix.gateway_config.read_text(encoding="utf-8")
    postfix.gateway_config.write_text(good + "\n[nonsense]\n", encoding="utf-8")
    postfix.send(mail(message_id="<utsatt@nordby-skole.example>", subject="Skriveren virker ikke"))
    wait_for(
        lambda: _log_has(postfix, "status=deferred", "config error: nonsense: unknown section"),
        what="deferred",
    )
    postfix.gateway_config.write_text(good, encoding="utf-8")
    assert not _stored(postfix, "<utsatt@nordby-skole.example>")  # Postfix waits minutes before a retry
    subprocess.run([POSTQUEUE, "-c", str(postfix.config), "-f"], check=True, timeout=60)
    wait_for(lambda: _stored(postfix, "<utsatt@nordby-skole.example>"), what="delivered on the retry")

    huge = mail(message_id="<for-stor@nordby-skole.example>", body="x" * 1_100_000)
    postfix.send(huge)
    wait_for(lambda: _log_has(postfix, "status=bounced", "refused: message larger than"), what="bounced")
    assert not _stored(postfix, "<for-stor@nordby-skole.example>")
