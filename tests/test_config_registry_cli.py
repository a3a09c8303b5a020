"""Configuration and registry errors are one clear line; every CLI command is documented."""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.cli.main import build_parser
from gateway.core.config import ConfigError, load_config
from gateway.directory.registry import RegistryError, parse_registry
from tests.support import REPO


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[smtp]\nport = '25x'\n", "smtp.port: expected an integer"),
        ("[smtp]\nport = 70000\n", "smtp.port: 70000 is not a TCP port"),
        ("[service]\naddress = 'not an address'\n", "service.address:"),
        ("[service]\nlanguage = 'de'\n", "service.language: must be one of nb, en"),
        ("[service]\ntimezone = 'Mars/Olympus'\n", "service.timezone: unknown time zone"),
        ("[service]\nadress = 'x@y.example'\n", "service.adress: unknown key"),
        ("[imap]\nssl = 'maybe'\n", "imap.ssl: must be implicit, starttls or none"),
        ("[relay]\nport = true\n", "relay.port: expected an integer"),
        ("[storage\n", "not valid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    """Each kind of config mistake raises one line that names the key."""
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, text))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_bad_config_on_command_line_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """The CLI prints `config error: <key>: ...` and exits 78, without a traceback."""
    path = _config(tmp_path, "[smtp]\nport = '25x'\n")
    run = subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(path), "cases", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 78
    assert run.stderr.strip() == "config error: smtp.port: expected an integer, got '25x'"


def test_relative_paths_are_taken_from_the_config_file(tmp_path: Path) -> None:
    """storage.path and registry.file are resolved against the config file's directory."""
    config = load_config(_config(tmp_path, "[storage]\npath = 'state'\n[registry]\nfile = 'c.toml'\n"))
    assert config.storage.path == tmp_path / "state"
    assert config.registry.file == tmp_path / "c.toml"
    assert config.relay is None


def _org(org_id: str, email: str, role: str = "incidents", domain: str | None = None) -> dict[str, object]:
    return {
        "id": org_id,
        "name": org_id.title(),
        "domains": [domain or f"{org_id}.example"],
        "contact": [{"role": role, "name": "X", "email": email}],
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"organization": [_org("a", "x@a.example"), _org("b", "x@a.example")]},
            "address 'x@a.example': in both 'a' and 'b'",
        ),
        ({"organization": [_org("a", "x@a.example", role="boss")]}, "unknown role 'boss'"),
        ({"organization": [_org("a", "not-an-address")]}, "contact #1: 'not-an-address' is not an address"),
        (
            {"organization": [_org("a", "x@a.example"), _org("a", "y@b.example", domain="b.example")]},
            "id used twice",
        ),
        ({"agent": [{"name": "A", "email": "a@s.example", "line": 3}]}, "line must be 1 or 2"),
    ],
)
def test_registry_errors_name_the_entry(data: dict[str, object], message: str) -> None:
    """Each registry mistake is reported with the entry it is in."""
    with pytest.raises(RegistryError) as caught:
        parse_registry(data)
    assert message in str(caught.value)


def test_registry_normalises_addresses_and_idna_domains() -> None:
    """Contact addresses are lower-cased and IDNA-encoded so lookups match what mail carries."""
    registry = parse_registry(
        {
            "organization": [
                {
                    "id": "b",
                    "name": "Bø skole",
                    "domains": ["bø-skole.example"],
                    "contact": [{"role": "technical", "name": "Å", "email": "Ås@Bø-Skole.example"}],
                }
            ]
        }
    )
    org = registry.organization_of_contact("ås@xn--b-skole-q1a.example")
    assert org is not None and org.id == "b"
    assert registry.organizations["b"].domains == ("xn--b-skole-q1a.example",)
    assert registry.organization_of_domain("elev@xn--b-skole-q1a.example") is not None


def test_contacts_check_command(tmp_path: Path) -> None:
    """`gateway contacts check` accepts the shipped registry and rejects a broken one with exit 65."""
    broken = tmp_path / "contacts.toml"
    broken.write_text(
        '[[organization]]\nid = "a"\nname = "A"\ndomains = []\n'
        '[[organization.contact]]\nrole = "boss"\nname = "B"\nemail = "b@a.example"\n'
    )
    config = _config(tmp_path, f"[registry]\nfile = '{broken}'\n")
    bad = subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(config), "contacts", "check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 65 and "unknown role 'boss'" in bad.stderr
    good_config = _config(tmp_path, f"[registry]\nfile = '{REPO / 'data/contacts.toml'}'\n")
    good = subprocess.run(
        [sys.executable, "-m", "gateway", "--config", str(good_config), "contacts", "check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert good.returncode == 0 and "3 organisations" in good.stdout


def _commands(parser: argparse.ArgumentParser, prefix: str = "gateway") -> list[str]:
    found: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = _commands(sub, f"{prefix} {name}")
                found.extend(nested or [f"{prefix} {name}"])
    return found


def test_every_cli_command_is_in_the_readme() -> None:
    """Operators learn the CLI from the README, so each command must be listed there."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    commands = _commands(build_parser())
    assert len(commands) >= 13
    missing = [c for c in commands if f"`{c}" not in readme]
    assert missing == []
