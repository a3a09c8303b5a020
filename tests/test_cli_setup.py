"""A fresh installation: shipped defaults, one-line config errors, and files a root shell leaves usable."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.core.config import load_config
from gateway.pipeline.process import process
from gateway.runtime import Runtime
from tests.support import mail, write_config

NOBODY = 65534


def _without_paths(config_path: Path) -> None:
    text = config_path.read_text(encoding="utf-8")
    start = text.index("[paths]")
    end = text.find("\n[", start + 1)
    config_path.write_text(text[:start] + (text[end:] if end != -1 else ""), encoding="utf-8")


def test_config_without_paths_uses_the_shipped_rules_and_templates(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without [paths], rules and templates come from the package, not from beside the config."""
    _without_paths(config_path)
    config = load_config(config_path)
    assert (config.rules_dir / "10-senders.toml").is_file()
    assert (config.templates_dir / "nb" / "customer" / "receipt.txt.j2").is_file()
    runtime = Runtime(config)
    try:
        assert process(runtime, mail(), "pipe").outcome == "opened"
    finally:
        runtime.close()
    assert main(["--config", str(config_path), "rules", "check"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("ok: ")


def test_a_missing_folder_is_one_config_line(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """paths.templates naming no folder is `config error: paths.templates: …` and exit 78."""
    text = config_path.read_text(encoding="utf-8")
    start = text.index("templates = ")
    end = text.index("\n", start)
    config_path.write_text(text[:start] + 'templates = "nowhere"' + text[end:], encoding="utf-8")
    assert main(["--config", str(config_path), "serve"]) == 78
    err = capsys.readouterr().err
    assert err == f"config error: paths.templates: no such directory: {config_path.parent / 'nowhere'}\n"


@contextmanager
def as_user(uid: int) -> Iterator[None]:
    """This process as another user for a moment: the gateway's modules are imported already."""
    os.setegid(uid)
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder the service's user can reach (pytest's own tmp folders are root's alone)."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to act as root and as the service's user")
    folder = Path(tempfile.mkdtemp(prefix="gateway-owner-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def test_a_root_shell_leaves_files_the_service_can_write(
    shared_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Files `outbox flush` creates as root belong to storage.path's owner, so the service's next flush works."""
    config_path = write_config(shared_dir)
    storage = shared_dir / "var"
    storage.mkdir()
    os.chown(storage, NOBODY, NOBODY)
    assert main(["--config", str(config_path), "cases", "list"]) == 0  # the store made, as root
    runtime = Runtime(load_config(config_path))
    try:
        process(runtime, mail(), "pipe")
        process(runtime, mail(subject="Skriveren virker ikke"), "pipe")
    finally:
        runtime.close()
    assert main(["--config", str(config_path), "outbox", "flush"]) == 0
    owners = {p.relative_to(storage).as_posix(): p.stat().st_uid for p in storage.rglob("*")}
    assert "outgoing" in owners and set(owners.values()) == {NOBODY}
    with as_user(NOBODY):
        runtime = Runtime(load_config(config_path))
        try:
            process(runtime, mail(subject="Trådløst nett borte"), "pipe")
        finally:
            runtime.close()
        assert main(["--config", str(config_path), "outbox", "flush"]) == 0
    assert "sent 0, deferred 0, failed 0" not in capsys.readouterr().out.splitlines()[-1]


def test_a_permission_problem_is_one_line(shared_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The wrong user running a command gets one line naming the store and the cause, no traceback."""
    config_path = write_config(shared_dir)
    runtime = Runtime(load_config(config_path))
    try:
        process(runtime, mail(), "pipe")
    finally:
        runtime.close()
    capsys.readouterr()
    with as_user(NOBODY):
        code = main(["--config", str(config_path), "outbox", "flush"])
    assert code == 75  # temporary: the MTA and cron try again once the owner is put right
    assert capsys.readouterr().err == (
        f"storage unavailable: {shared_dir / 'var' / 'gateway.db'}: attempt to write a readonly database;"
        " run as the service's user\n"
    )
