"""The systemd units pass systemd's own checks, the docs describe them alike, and the sdist ships them."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.support import REPO

UNITS = REPO / "docs" / "systemd"
LITESTREAM_BIN = "/opt/gateway/.venv/bin/litestream"
GATEWAY_BIN = "/opt/gateway/.venv/bin/gateway"
# What gateway.service confines itself with; every unit that runs the gateway carries the same.
HARDENING = (
    "NoNewPrivileges",
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectControlGroups",
    "RestrictSUIDSGID",
    "LockPersonality",
    "LimitNOFILE",
)


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text(encoding="utf-8"))
    return parser


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` finds nothing to say about any unit (the gateway binary stood in for)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    stand_ins = {}
    for binary in (GATEWAY_BIN, LITESTREAM_BIN):
        stand_in = tmp_path / Path(binary).name
        stand_in.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
        stand_in.chmod(0o755)
        stand_ins[binary] = str(stand_in)
    for unit in UNITS.iterdir():
        text = unit.read_text(encoding="utf-8")
        for binary, stand_in_path in stand_ins.items():
            text = text.replace(binary, stand_in_path)
        (tmp_path / unit.name).write_text(text, encoding="utf-8")
    names = sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".service", ".timer"))
    done = subprocess.run(
        [analyze, "verify", "--man=no", *names], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_services_are_confined_alike_and_write_only_where_systemd_creates() -> None:
    """Every service has gateway.service's hardening and LimitNOFILE, and no ReadWritePaths to a folder nothing creates."""
    services = sorted(UNITS.glob("*.service"))
    assert len(services) >= 6
    reference = _unit(UNITS / "gateway.service")["Service"]
    for path in services:
        service = _unit(path)["Service"]
        assert {key: service.get(key) for key in HARDENING} == {key: reference[key] for key in HARDENING}, (
            path.name
        )
        assert "gateway" in service["StateDirectory"].split(), path.name
        assert service["User"] == "gateway"
        for entry in service.get("ReadWritePaths", "").split():
            assert entry.startswith("-"), f"{path.name}: {entry} must exist or be optional"
        for written in re.findall(r"/var/(?:lib|backups)/[\w-]+", service.get("ExecStart", "")):
            assert written.rsplit("/", 1)[1] in service["StateDirectory"].split(), f"{path.name}: {written}"


def _timers() -> dict[str, str]:
    """Each timer and the clock time it fires at, as HH:MM, where it has one."""
    found = {}
    for path in sorted(UNITS.glob("*.timer")):
        when = _unit(path)["Timer"].get("OnCalendar", "")
        clock = re.search(r"(\d\d):(\d\d):00", when)
        found[path.name] = f"{clock.group(1)}:{clock.group(2)}" if clock and "*:" not in when else ""
    return found


@pytest.mark.parametrize("document", ["README.md", "docs/deployment.md"])
def test_docs_name_the_same_units_and_times(document: str) -> None:
    """README and docs/deployment.md name every timer with its time, and no unit that is not shipped."""
    text = (REPO / document).read_text(encoding="utf-8")
    for timer, at in _timers().items():
        rows = [line for line in text.splitlines() if timer in line]
        assert rows, f"{document} does not name {timer}"
        if at:
            assert any(at in row for row in rows), f"{document}: {timer} at {at}"
    shipped = {p.name for p in UNITS.iterdir()} | {
        "gateway-digest@daily.service",
        "gateway-digest@weekly.service",
    }
    named = set(re.findall(r"gateway[\w@.-]*\.(?:service|timer)", text))
    assert named <= shipped


def test_sdist_ships_the_docs_and_units(tmp_path: Path) -> None:
    """The source distribution carries the docs and systemd units beside the code."""
    tree = tmp_path / "tree"
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if (REPO / name).is_file() and not name.startswith("tests/"):
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, tree / name)
    built = subprocess.run(
        [sys.executable, "-c", "from setuptools import build_meta as b; print(b.build_sdist('dist'))"],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    archive = tree / "dist" / built.stdout.strip().splitlines()[-1]
    with tarfile.open(archive) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {
        "docs/deployment.md",
        "docs/architecture.md",
        "docs/systemd/gateway.service",
        "MANIFEST.in",
    } <= names
    assert {p.relative_to(REPO).as_posix() for p in UNITS.iterdir()} <= names
