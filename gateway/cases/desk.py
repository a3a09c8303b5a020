"""An agent's changes to a case from a shell: the same checks and history as the commands by mail."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.cases import local_work
from gateway.cases.agents import apply_commands, reply_address
from gateway.cases.commands import Command, check
from gateway.core import clock
from gateway.directory.registry import Agent
from gateway.store.case_rows import record

if TYPE_CHECKING:
    from gateway.runtime import Runtime

# Written into the history beside each change, so "why did this change?" says where it came from.
FROM_SHELL = "from the shell"


class DeskRefused(Exception):
    """The agent or a value failed the checks the mail commands use; nothing was changed."""


class NoSuchCase(Exception):
    pass


def agent_named(runtime: Runtime, address: str) -> Agent:
    """`--as`: an agent's address exactly as in the registry; anyone else may not act on cases."""
    agent = runtime.registry().agent(address.strip().lower())
    if agent is None:
        known = ", ".join(sorted(runtime.registry().agents)) or "none"
        raise DeskRefused(f"--as {address}: not an agent in the registry (agents: {known})")
    return agent


def change(runtime: Runtime, agent: Agent, case_id: int, wanted: list[tuple[str, str]]) -> list[str]:
    """Apply `(command, value)` pairs such as ("status", "løst"), all or none; returns what changed."""
    registry = runtime.registry()
    commands = []
    errors = []
    for name, value in wanted:
        try:
            line = f"#{name} {value} ({FROM_SHELL})"
            commands.append(Command(line, name, check(name, value, registry) or ""))
        except ValueError as exc:
            errors.append(f"{name} {value}: {exc}")
    if errors:
        raise DeskRefused("; ".join(errors))
    with runtime.store.write() as conn:
        if conn.execute("SELECT 1 FROM cases WHERE id = ?", (case_id,)).fetchone() is None:
            raise NoSuchCase(f"no case {case_id}")
        changes = apply_commands(runtime, conn, agent.email, case_id, commands, None)
    return [str(c) for c in changes] or ["nothing changed"]


def note(runtime: Runtime, agent: Agent, case_id: int, text: str) -> None:
    """An internal note: in the case's history under the agent's name, never sent to anyone."""
    if not text.strip():
        raise DeskRefused("--text: a note needs some text")
    with runtime.store.write() as conn:
        if conn.execute("SELECT 1 FROM cases WHERE id = ?", (case_id,)).fetchone() is None:
            raise NoSuchCase(f"no case {case_id}")
        record(conn, case_id, agent.email, "internal-note", text.strip(), FROM_SHELL)
        conn.execute("UPDATE cases SET updated_at = ? WHERE id = ?", (clock.iso(), case_id))


def ask_local_work(runtime: Runtime, agent: Agent, case_id: int, text: str) -> local_work.Requested:
    """`#lokalt` from a shell: the same mail and history; a request that cannot go is refused after
    its attempt is recorded, so the agent is told and the case shows it."""
    if not text.strip():
        raise DeskRefused("--text: a request for local work needs some text")
    with runtime.store.write() as conn:
        if conn.execute("SELECT 1 FROM cases WHERE id = ?", (case_id,)).fetchone() is None:
            raise NoSuchCase(f"no case {case_id}")
        outcome = local_work.request(
            runtime, conn, case_id, agent, text, reply_address(runtime, conn, case_id)
        )
    if outcome.refused:
        raise DeskRefused(outcome.summary())
    return outcome
