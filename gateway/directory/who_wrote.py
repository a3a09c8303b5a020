"""Who sent this: an agent, a contact point (with roles), an end user of a customer, or a stranger."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.directory.registry import Agent, Organization, Registry


@dataclass(frozen=True)
class Sender:
    address: str
    name: str
    kind: str  # agent | contact | end-user | unknown
    organization: Organization | None = None
    roles: frozenset[str] = field(default_factory=frozenset)
    agent: Agent | None = None

    @property
    def role_names(self) -> list[str]:
        return sorted(self.roles)


def identify(address: str, name: str, registry: Registry) -> Sender:
    """Classify a From address against the registry; the display name never decides anything."""
    agent = registry.agent(address)
    if agent is not None:
        return Sender(address, name, "agent", agent=agent)
    org = registry.organization_of_contact(address)
    if org is not None:
        return Sender(address, name, "contact", organization=org, roles=frozenset(org.roles_of(address)))
    org = registry.organization_of_domain(address) if address else None
    if org is not None:
        return Sender(address, name, "end-user", organization=org)
    return Sender(address, name, "unknown")
