"""A real, private Dovecot IMAP server run as a child process for tests."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import ClassVar

from imapclient import IMAPClient

__all__ = [
    "Dovecot",
    "DovecotError",
    "dovecot_available",
    "dovecot_binary",
    "dovecot_version",
    "running_dovecot",
]

_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")

# Longest socket path Dovecot 2.3 creates below base_dir ("token-login/imap-urlauth")
# plus slack; sun_path holds 107 characters.
_SOCKET_SUFFIX_ROOM = 32
_SUN_PATH_MAX = 107

# Post-login capability string of the installed Dovecot, keyed by binary path.
_default_capabilities: dict[str, tuple[str, ...]] = {}


class DovecotError(RuntimeError):
    """The private Dovecot instance could not be started, reached or changed."""


def dovecot_binary() -> str | None:
    """Return the path of the dovecot binary, or None when it is not installed."""
    found = shutil.which("dovecot")
    if found:
        return found
    for directory in _SBIN_DIRS:
        candidate = Path(directory) / "dovecot"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def dovecot_version() -> str | None:
    """Return `dovecot --version` output (e.g. "2.3.19.1 (9b53102964)"), or None."""
    binary = dovecot_binary()
    if binary is None:
        return None
    try:
        result = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def dovecot_available() -> bool:
    """Return True when a Dovecot 2.3 binary that this harness can drive is installed."""
    version = dovecot_version()
    if version is None or not version.startswith("2.3."):
        return False
    # As root the mail processes must drop to an unprivileged user; Dovecot refuses root.
    return os.geteuid() != 0 or _unprivileged_mail_user() is not None


def _unprivileged_mail_user() -> pwd.struct_passwd | None:
    """Pick the non-root account that owns mail files when the harness runs as root."""
    for name in ("dovecot", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        if entry.pw_uid != 0:
            return entry
    return None


def _free_loopback_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _group_members(pgid: int) -> dict[int, str] | None:
    """Return {pid: command} of live (non-zombie) processes in group `pgid`; None without /proc."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    members: dict[int, str] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (command) state ppid pgrp ..."
        head, _, tail = stat.rpartition(")")
        fields = tail.split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members[int(entry.name)] = head.partition("(")[2]
    return members


def _group_alive(pgid: int) -> bool:
    """Return True while a live process of process group `pgid` exists."""
    members = _group_members(pgid)
    if members is not None:
        return bool(members)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class Dovecot:
    """A private Dovecot instance with one passwd-file user and maildir storage.

    Everything (config, base_dir, state_dir, log, mail) lives below `tmp_dir`, the server
    listens on a free port of 127.0.0.1 only, and several instances can run side by side.
    As root, Dovecot refuses mail access as uid 0, so mail processes chroot into the mail
    directory and run as an unprivileged account ("dovecot"); the files are owned by it.
    """

    host: ClassVar[str] = "127.0.0.1"
    username: ClassVar[str] = "gateway"
    password: ClassVar[str] = "secret"
    separator: ClassVar[str] = "/"

    def __init__(
        self,
        tmp_dir: str | os.PathLike[str],
        *,
        move_capability: bool = True,
        startup_timeout: float = 15.0,
        tls: bool = False,
    ) -> None:
        binary = dovecot_binary()
        if binary is None:
            raise DovecotError("dovecot is not installed (run .ci/install-dovecot)")
        self._binary = binary
        self.move_capability = move_capability
        self.startup_timeout = startup_timeout
        self.root = Path(tmp_dir).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path = self.root / "dovecot.conf"
        self.passwd_path = self.root / "passwd"
        self.log_path = self.root / "dovecot.log"
        self.stderr_path = self.root / "dovecot.stderr"
        self.state_dir = self.root / "state"
        self.mail_root = self.root / "mail"
        self._own_base_dir: Path | None = None
        base_dir = self.root / "run"
        if len(str(base_dir)) + _SOCKET_SUFFIX_ROOM > _SUN_PATH_MAX:
            # Unix socket paths are limited; fall back to a short private directory.
            self._own_base_dir = Path(tempfile.mkdtemp(prefix="dovecot-"))
            base_dir = self._own_base_dir
        self.base_dir = base_dir
        self.port = _free_loopback_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._as_root = os.geteuid() == 0
        self._capability_override: str | None = None
        self._port_fixed = False  # after the first successful start the port never changes
        # With tls: STARTTLS on `port` and implicit TLS on `tls_port`, with a self-signed
        # certificate for 127.0.0.1 that clients trust through `ca_file`.
        self.tls = tls
        self.tls_port = _free_loopback_port() if tls else 0
        self.ca_file = self.root / "tls" / "cert.pem"

    # -- paths -----------------------------------------------------------------

    @property
    def maildir(self) -> Path:
        """Return the host path of the user's Maildir (the INBOX directory)."""
        return self.mail_root / self.username / "Maildir"

    def folder_path(self, folder: str) -> Path:
        """Return the host path of `folder` (IMAP name, "/" separated) in Maildir++ layout."""
        if folder.upper() == "INBOX":
            return self.maildir
        return self.maildir / ("." + folder.replace(self.separator, "."))

    @property
    def running(self) -> bool:
        """Return True while the Dovecot master process is alive."""
        return self._process is not None and self._process.poll() is None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Start Dovecot and return once the port greets with `* OK`."""
        if self.running:
            return
        self._prepare_dirs()
        if not self.move_capability and self._capability_override is None:
            self._capability_override = self._capabilities_without_move()
        self._launch()
        if not self.move_capability:
            advertised = self.capabilities()
            if "MOVE" in advertised or "UIDPLUS" not in advertised:
                self.stop()
                raise DovecotError(f"unexpected capabilities without MOVE: {advertised}")

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate Dovecot and all its processes; kill them if they outlive `timeout`."""
        process = self._process
        if process is None:
            return
        self._process = None
        pgid = process.pid
        if process.poll() is None:
            process.terminate()

            # Dovecot's master ends its shutdown with an unconditional one-second sleep
            # once every other child has exited, while its log process drains until the
            # master is gone. Once only those two are left, the mail processes are done and
            # killing the master just skips the sleep (the log process then exits on EOF).
            def only_master_and_log_left() -> bool:
                members = _group_members(pgid)
                if members is None:
                    return process.poll() is not None
                members.pop(pgid, None)
                return all(command == "log" for command in members.values())

            if not _wait_for(only_master_and_log_left, timeout):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
            if process.poll() is None:
                process.kill()
            process.wait(timeout=timeout)
        if not _wait_for(lambda: not _group_alive(pgid), timeout):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            if not _wait_for(lambda: not _group_alive(pgid), timeout):
                raise DovecotError(f"dovecot processes of group {pgid} did not exit")

    def restart(self) -> None:
        """Stop and start again on the same port with the same mail data."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and remove the short base_dir fallback, if one was made."""
        self.stop()
        if self._own_base_dir is not None:
            shutil.rmtree(self._own_base_dir, ignore_errors=True)
            self._own_base_dir = None

    def __enter__(self) -> Dovecot:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- IMAP helpers ----------------------------------------------------------

    def connect(self, *, login: bool = True, timeout: float = 10.0) -> IMAPClient:
        """Return an IMAPClient connected to this server, logged in unless `login` is False."""
        client = IMAPClient(self.host, port=self.port, ssl=False, timeout=timeout)
        if login:
            try:
                client.login(self.username, self.password)
            except Exception:
                client.shutdown()
                raise
        return client

    @contextlib.contextmanager
    def client(self) -> Iterator[IMAPClient]:
        """Yield a logged-in IMAPClient and log out afterwards."""
        client = self.connect()
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def capabilities(self) -> tuple[str, ...]:
        """Return the capabilities the server advertises after login (fresh CAPABILITY)."""
        with self.client() as client:
            typ, data = client._imap.capability()
        if typ != "OK" or not data or data[-1] is None:
            raise DovecotError(f"CAPABILITY failed: {typ} {data!r}")
        return tuple(data[-1].decode("ascii").upper().split())

    def folders(self) -> list[str]:
        """Return the names of all folders of the user."""
        with self.client() as client:
            return [name for _flags, _delim, name in client.list_folders()]

    def create_folder(self, name: str) -> None:
        """Create folder `name` unless it already exists."""
        with self.client() as client:
            if not client.folder_exists(name):
                client.create_folder(name)

    def append(self, folder: str, raw: bytes, flags: Iterable[str | bytes] = ()) -> int:
        """Append `raw` to `folder` (created if missing) and return its UID (APPENDUID)."""
        with self.client() as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            response = client.append(folder, raw, flags=tuple(flags))
        match = re.search(rb"\[APPENDUID \d+ (\d+)\]", response)
        if match is None:
            raise DovecotError(f"APPEND response without APPENDUID: {response!r}")
        return int(match.group(1))

    def folder_uids(self, folder: str) -> list[int]:
        """Return the sorted UIDs of all messages in `folder`."""
        with self.client() as client:
            client.select_folder(folder, readonly=True)
            return sorted(int(uid) for uid in client.search("ALL"))

    def fetch_all(self, folder: str) -> dict[int, bytes]:
        """Return {uid: exact message bytes} for `folder` without setting \\Seen."""
        with self.client() as client:
            client.select_folder(folder, readonly=True)
            uids = client.search("ALL")
            if not uids:
                return {}
            fetched = client.fetch(uids, ["BODY.PEEK[]"])
        return {int(uid): bytes(data[b"BODY[]"]) for uid, data in fetched.items()}

    def folder_flags(self, folder: str) -> dict[int, frozenset[str]]:
        """Return {uid: flags} for `folder`, e.g. to check \\Deleted or \\Seen."""
        with self.client() as client:
            client.select_folder(folder, readonly=True)
            uids = client.search("ALL")
            if not uids:
                return {}
            fetched = client.fetch(uids, ["FLAGS"])
        return {
            int(uid): frozenset(flag.decode() for flag in data[b"FLAGS"]) for uid, data in fetched.items()
        }

    def uidvalidity(self, folder: str = "INBOX") -> int:
        """Return the current UIDVALIDITY of `folder`."""
        with self.client() as client:
            status = client.folder_status(folder, [b"UIDVALIDITY"])
        return int(status[b"UIDVALIDITY"])

    def change_uidvalidity(self, folder: str = "INBOX") -> int:
        """Give `folder` a new UIDVALIDITY, keeping its messages; return the new value.

        Dovecot keeps UIDVALIDITY in dovecot-uidlist and its indexes; with those removed
        it rebuilds them from the maildir files under a fresh UIDVALIDITY and renumbers
        the messages from UID 1. This needs a restart, so open client sessions are cut.
        """
        if not self.running:
            raise DovecotError("change_uidvalidity() needs a running server")
        before = self.uidvalidity(folder)
        path = self.folder_path(folder)
        if not path.is_dir():
            raise DovecotError(f"no maildir for folder {folder!r} at {path}")
        self.stop()
        doomed = [path / "dovecot-uidlist", *path.glob("dovecot.index*")]
        doomed += list(self.maildir.glob("dovecot.list.index*"))
        for file in doomed:
            file.unlink(missing_ok=True)
        self._launch()
        after = self.uidvalidity(folder)
        if after == before:
            raise DovecotError(f"UIDVALIDITY of {folder!r} stayed {before}")
        return after

    # -- internals ---------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        for directory in (self.state_dir, self.base_dir, self.mail_root):
            directory.mkdir(parents=True, exist_ok=True)
        if self.tls and not self.ca_file.exists():
            self._make_certificate()
        self.passwd_path.write_text(f"{self.username}:{{PLAIN}}{self.password}::::::\n")
        self.passwd_path.chmod(0o600)
        home = self.mail_root / self.username
        home.mkdir(exist_ok=True)
        if self._as_root:
            mail_user = _unprivileged_mail_user()
            if mail_user is None:
                raise DovecotError("no unprivileged account to own mail files as root")
            # Inside the mail chroot: the user's home and a /tmp for mail_temp_dir.
            self.mail_root.chmod(0o755)
            chroot_tmp = self.mail_root / "tmp"
            chroot_tmp.mkdir(exist_ok=True)
            for directory in (home, chroot_tmp):
                os.chown(directory, mail_user.pw_uid, mail_user.pw_gid)
                directory.chmod(0o700)

    def _make_certificate(self) -> None:
        """A self-signed certificate for 127.0.0.1, valid for a day, made with the openssl tool."""
        self.ca_file.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-keyout", str(self.ca_file.with_name("key.pem")), "-out", str(self.ca_file),
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        if self._as_root:  # the login processes read the key after dropping privileges
            self.ca_file.with_name("key.pem").chmod(0o644)

    def _config_text(self, capability: str | None) -> str:
        if self._as_root:
            mail_user = _unprivileged_mail_user()
            assert mail_user is not None
            mail_group = grp.getgrgid(mail_user.pw_gid).gr_name
            login_user = "dovenull" if _user_exists("dovenull") else mail_user.pw_name
            identity = f"""\
default_internal_user = root
default_internal_group = root
default_login_user = {login_user}
# Dovecot refuses mail access as uid 0: run mail processes as an unprivileged
# account, chrooted into the mail root so the (0700) tmp path above it is no obstacle.
mail_uid = {mail_user.pw_name}
mail_gid = {mail_group}
first_valid_uid = {min(mail_user.pw_uid, 500)}
first_valid_gid = {min(mail_user.pw_gid, 500)}
mail_chroot = {self.mail_root}
valid_chroot_dirs = {self.mail_root}
mail_location = maildir:~/Maildir
"""
            home = "/%u"
        else:
            me = pwd.getpwuid(os.getuid())
            group = grp.getgrgid(os.getgid()).gr_name
            identity = f"""\
default_internal_user = {me.pw_name}
default_internal_group = {group}
default_login_user = {me.pw_name}
first_valid_uid = {min(me.pw_uid, 500)}
first_valid_gid = {min(me.pw_gid, 500)}
mail_location = maildir:~/Maildir
"""
            home = f"{self.mail_root}/%u"
        capability_line = f"imap_capability = {capability}\n" if capability else ""
        key_file = self.ca_file.with_name("key.pem")
        tls_lines = (
            f"ssl = yes\nssl_cert = <{self.ca_file}\nssl_key = <{key_file}\n" if self.tls else "ssl = no\n"
        )
        # An unprivileged master cannot chroot the services Dovecot chroots by default.
        login_chroot = "" if self._as_root else "  chroot =\n"
        anvil = "" if self._as_root else "service anvil {\n  chroot =\n}\n"
        return f"""\
# Generated by tests/imapserver.py for Dovecot 2.3; private test instance.
base_dir = {self.base_dir}
state_dir = {self.state_dir}
instance_name = dovecot-test-{self.port}
log_path = {self.log_path}
info_log_path = {self.log_path}
protocols = imap
listen = {self.host}
{tls_lines}disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
{identity}mail_fsync = never
mail_max_userip_connections = 100
mailbox_idle_check_interval = 1 secs
{capability_line}namespace inbox {{
  inbox = yes
  separator = {self.separator}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.passwd_path}
}}
userdb {{
  driver = static
  args = home={home}
}}
service imap-login {{
{login_chroot}  inet_listener imap {{
    address = {self.host}
    port = {self.port}
  }}
  inet_listener imaps {{
    address = {self.host}
    port = {self.tls_port}
  }}
}}
{anvil}"""

    def _launch(self, capability: str | None = None) -> None:
        """Write the config, start the master and wait for the `* OK` greeting.

        Before the first successful start another program may have taken the port chosen
        in __init__; then a fresh free port is tried. Afterwards the port is kept.
        """
        attempts = 1 if self._port_fixed else 3
        for attempt in range(attempts):
            self.config_path.write_text(self._config_text(capability or self._capability_override))
            (self.base_dir / "master.pid").unlink(missing_ok=True)
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
            with self.stderr_path.open("ab") as stderr:
                self._process = subprocess.Popen(
                    [self._binary, "-F", "-c", str(self.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=stderr,
                    stderr=stderr,
                    env=env,
                    start_new_session=True,
                )
            if self._wait_greeting():
                self._port_fixed = True
                return
            log = self._log_since(log_offset)
            self.stop()
            port_taken = "Address already in use" in log
            if port_taken and attempt + 1 < attempts:
                self.port = _free_loopback_port()
                continue
            raise DovecotError(
                f"dovecot did not greet on {self.host}:{self.port}; log:\n{log}"
                f"\nstderr:\n{self.stderr_path.read_text(errors='replace')}"
            )

    def _wait_greeting(self) -> bool:
        """Poll the port until it greets `* OK`; False if the master exits or time runs out."""
        deadline = time.monotonic() + self.startup_timeout
        process = self._process
        assert process is not None
        while time.monotonic() < deadline:
            if self._greets():
                return True
            try:
                process.wait(timeout=0.02)
            except subprocess.TimeoutExpired:
                continue
            return False
        return False

    def _greets(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
                line = sock.makefile("rb").readline(1024)
        except OSError:
            return False
        return line.startswith(b"* OK")

    def _log_since(self, offset: int) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def _capabilities_without_move(self) -> str:
        """Build an imap_capability value: the real post-login list minus MOVE."""
        defaults = _default_capabilities.get(self._binary)
        if defaults is None:
            self._launch(capability=None)
            try:
                defaults = self.capabilities()
            finally:
                self.stop()
            _default_capabilities[self._binary] = defaults
        return " ".join(cap for cap in dict.fromkeys(defaults) if cap != "MOVE")


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@contextlib.contextmanager
def running_dovecot(tmp_dir: str | os.PathLike[str], move_capability: bool = True) -> Iterator[Dovecot]:
    """Yield a started private Dovecot below `tmp_dir` and stop it on exit."""
    server = Dovecot(tmp_dir, move_capability=move_capability)
    try:
        server.start()
        yield server
    finally:
        server.close()
