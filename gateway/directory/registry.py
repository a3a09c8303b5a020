"""The contact registry: customer organisations, their contact points by role, and our agents."""

from __future__ import annotations

import fnmatch
import os
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.core.addresses import AddressError, domain_of, normalise_address

# Role keys as written in the registry, and the Norwegian names people know them by.
ROLES: dict[str, str] = {
    "incidents": "Varslingspunkt Incidents",
    "change": "Varslingspunkt Change",
    "local-support": "Lokalt supportpunkt",
    "technical": "Teknisk ansvarlig",
    "administrative": "Juridisk/administrativ ansvarlig",
}
ROLE_NAMES_EN: dict[str, str] = {
    "incidents": "Incident notification point",
    "change": "Change notification point",
    "local-support": "Local support point",
    "technical": "Technical contact",
    "administrative": "Legal/administrative contact",
}


class RegistryError(Exception):
    """The registry file is unusable; the message names the entry and the reason."""


@dataclass(frozen=True)
class Contact:
    role: str
    name: str
    email: str
    phone: str = ""


@dataclass(frozen=True)
class Organization:
    id: str
    name: str
    domains: tuple[str, ...]
    language: str = "nb"
    contacts: tuple[Contact, ...] = ()
    # Monitoring sysname patterns (fnmatch) for devices this organisation owns.
    devices: tuple[str, ...] = ()
    # Of those, the devices whose failure is serious enough to reach Teknisk ansvarlig after hours.
    critical_devices: tuple[str, ...] = ()
    # The organisation can log in to NAV and change a user port's VLAN itself (self-service).
    nav_access: bool = False

    def contacts_with(self, role: str) -> list[Contact]:
        return [c for c in self.contacts if c.role == role]

    def roles_of(self, address: str) -> set[str]:
        return {c.role for c in self.contacts if c.email == address}

    def owns_device(self, sysname: str) -> bool:
        return any(fnmatch.fnmatch(sysname.lower(), p.lower()) for p in self.devices)

    def is_critical_device(self, sysname: str) -> bool:
        return any(fnmatch.fnmatch(sysname.lower(), p.lower()) for p in self.critical_devices)


@dataclass(frozen=True)
class Agent:
    name: str
    email: str
    line: int = 1
    handle: str = ""


@dataclass
class Registry:
    organizations: dict[str, Organization] = field(default_factory=dict)
    agents: dict[str, Agent] = field(default_factory=dict)
    _by_address: dict[str, Organization] = field(default_factory=dict)
    _by_domain: dict[str, Organization] = field(default_factory=dict)

    def organization_of_contact(self, address: str) -> Organization | None:
        return self._by_address.get(address)

    def organization_of_domain(self, address: str) -> Organization | None:
        domain = domain_of(address)
        # A sub-domain (elev.skole.example) belongs to the registered parent domain.
        while domain:
            if domain in self._by_domain:
                return self._by_domain[domain]
            domain = domain.partition(".")[2]
        return None

    def agent(self, address: str) -> Agent | None:
        return self.agents.get(address)

    def agent_by_handle(self, handle: str) -> Agent | None:
        wanted = handle.lower()
        for agent in self.agents.values():
            if wanted in (agent.handle.lower(), agent.email, agent.email.partition("@")[0]):
                return agent
        return None

    def organization_of_device(self, sysname: str) -> Organization | None:
        for org in self.organizations.values():
            if org.owns_device(sysname):
                return org
        return None


def _email(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise RegistryError(f"{where}: email must be a string")
    try:
        return normalise_address(value)
    except AddressError as exc:
        raise RegistryError(f"{where}: {exc}") from None


def _text(entry: dict[str, Any], key: str, where: str, required: bool = True) -> str:
    value = entry.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise RegistryError(f"{where}: '{key}' must be a non-empty string")
    return value.strip()


def _contact(entry: dict[str, Any], where: str) -> Contact:
    role = _text(entry, "role", where)
    if role not in ROLES:
        raise RegistryError(f"{where}: unknown role {role!r} (known: {', '.join(ROLES)})")
    return Contact(
        role=role,
        name=_text(entry, "name", where),
        email=_email(entry.get("email"), where),
        phone=_text(entry, "phone", where, required=False),
    )


def _organization(entry: dict[str, Any], index: int) -> Organization:
    where = f"organization #{index + 1}"
    org_id = _text(entry, "id", where)
    where = f"organization {org_id!r}"
    domains = entry.get("domains", [])
    if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
        raise RegistryError(f"{where}: 'domains' must be a list of strings")
    language = entry.get("language", "nb")
    if language not in ("nb", "en"):
        raise RegistryError(f"{where}: language must be nb or en")
    contacts = entry.get("contact", [])
    if not isinstance(contacts, list):
        raise RegistryError(f"{where}: 'contact' must be an array of tables")
    devices = entry.get("devices", [])
    if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
        raise RegistryError(f"{where}: 'devices' must be a list of sysname patterns")
    critical = entry.get("critical_devices", [])
    if not isinstance(critical, list) or not all(isinstance(d, str) for d in critical):
        raise RegistryError(f"{where}: 'critical_devices' must be a list of sysname patterns")
    nav_access = entry.get("nav_access", False)
    if not isinstance(nav_access, bool):
        raise RegistryError(f"{where}: 'nav_access' must be true or false")
    return Organization(
        id=org_id,
        name=_text(entry, "name", where),
        domains=tuple(d.strip().lower().encode("idna").decode() for d in domains),
        language=language,
        contacts=tuple(_contact(c, f"{where} contact #{i + 1}") for i, c in enumerate(contacts)),
        devices=tuple(devices),
        critical_devices=tuple(critical),
        nav_access=nav_access,
    )


def parse_registry(data: dict[str, Any]) -> Registry:
    """Build and cross-check a registry; every problem names the entry it is in."""
    registry = Registry()
    for index, entry in enumerate(data.get("organization", [])):
        org = _organization(entry, index)
        if org.id in registry.organizations:
            raise RegistryError(f"organization {org.id!r}: id used twice")
        registry.organizations[org.id] = org
        for domain in org.domains:
            other = registry._by_domain.get(domain)
            if other is not None and other.id != org.id:
                raise RegistryError(f"domain {domain!r}: claimed by {other.id!r} and {org.id!r}")
            registry._by_domain[domain] = org
        for contact in org.contacts:
            other = registry._by_address.get(contact.email)
            if other is not None and other.id != org.id:
                raise RegistryError(f"address {contact.email!r}: in both {other.id!r} and {org.id!r}")
            registry._by_address[contact.email] = org
    for index, entry in enumerate(data.get("agent", [])):
        where = f"agent #{index + 1}"
        email = _email(entry.get("email"), where)
        line = entry.get("line", 1)
        if line not in (1, 2):
            raise RegistryError(f"{where}: line must be 1 or 2")
        if email in registry._by_address:
            raise RegistryError(f"{where}: {email!r} is also a customer contact")
        registry.agents[email] = Agent(
            name=_text(entry, "name", where),
            email=email,
            line=line,
            handle=_text(entry, "handle", where, required=False) or email.partition("@")[0],
        )
    return registry


def load_registry(path: Path) -> Registry:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"{path}: registry file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{path}: not valid TOML ({exc})") from None
    return parse_registry(data)


class RegistryFile:
    """The registry on disk, re-read when its modification time or size changes."""

    def __init__(self, path: Path, check_every: float = 1.0) -> None:
        self.path = path
        self.check_every = check_every
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._registry = Registry()

    def current(self) -> Registry:
        # An edit is picked up within check_every seconds; per message we only read a clock.
        now = time.monotonic()
        if self._stamp is not None and now - self._checked < self.check_every:
            return self._registry
        self._checked = now
        stat = os.stat(self.path)
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if stamp != self._stamp:
                # A broken edit keeps the last good registry in service and is reported.
                self._registry = load_registry(self.path)
                self._stamp = stamp
            return self._registry
