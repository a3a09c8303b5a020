"""`gateway cases search`: full-text search over what was written in cases (FTS5, migration m005_search)."""

from __future__ import annotations

import logging
import re
import sqlite3
from typing import Any

from gateway.core.progress import Tick, quiet
from gateway.store.database import StorageUnavailable, Store

log = logging.getLogger("gateway.search")

EX_USAGE = 64


def fts_query(text: str) -> str:
    """Every word must occur, whole or as a word's start ("nett" finds "nettet"); no FTS syntax leaks in."""
    words = re.findall(r"\w+", text)
    return " ".join(f'"{word}"*' for word in words)


# Rows the intake lets wait before it indexes them in one statement (see schema m008).
INTAKE_BACKLOG = 256
# The most rows one call indexes, so one transaction never holds the write lock for long.
MOST_AT_ONCE = 5000


def index_backlog(conn: sqlite3.Connection, at_least: int = 1) -> int:
    """Index the messages above the watermark, when `at_least` ids wait; how far the mark moved."""
    (upto,) = conn.execute("SELECT indexed_upto FROM search_progress").fetchone()
    (top,) = conn.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()
    if top - upto < at_least:
        return 0
    top = min(top, upto + MOST_AT_ONCE)
    conn.execute(
        "INSERT INTO messages_fts (rowid, subject, body) SELECT id, subject, body FROM messages"
        " WHERE id > ? AND id <= ?",
        (upto, top),
    )
    conn.execute("UPDATE search_progress SET indexed_upto = ?", (top,))
    # Ids, not rows: a stretch of deleted messages still moves the mark, so catch_up goes on.
    return int(top - upto)


def catch_up(store: Store, tick: Tick = quiet) -> None:
    """Index everything not yet indexed, so a search sees every stored message."""
    (upto,) = store.conn.execute("SELECT indexed_upto FROM search_progress").fetchone()
    (top,) = store.conn.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()
    done = 0
    try:
        while True:
            with store.write() as conn:
                moved = index_backlog(conn)
            if moved == 0:
                return
            done += moved
            tick(done, max(done, top - upto))
    except StorageUnavailable as exc:  # a read-only or busy store still searches what is indexed
        log.warning("search index not brought up to date: %s", exc)


# Newest matches first: FTS5 walks its doclist by rowid and stops at the limit, where ordering by
# rank would score every match (seconds over a million cases for a common word).
MATCHES_SQL = (
    "SELECT c.id, c.subject, c.status, c.organization, c.requester, c.updated_at,"
    " m.id AS message, m.created_at AS message_at, m.subject AS message_subject, m.body"
    " FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid JOIN cases c ON c.id = m.case_id"
    " WHERE {where} ORDER BY messages_fts.rowid DESC LIMIT 1000"
)


def search_cases(
    store: Store,
    text: str,
    organization: str | None = None,
    status: str | None = None,
    since: str | None = None,
    limit: int = 50,
    tick: Tick = quiet,
) -> list[dict[str, Any]]:
    """Cases whose messages match `text`, newest match first, with that message's snippet."""
    catch_up(store, tick)
    where = ["messages_fts MATCH :query"]
    params: dict[str, Any] = {"query": fts_query(text)}
    for column, value in (("c.organization", organization), ("c.status", status)):
        if value:
            where.append(f"{column} = :{column[2:]}")
            params[column[2:]] = value
    if since:
        where.append("m.created_at >= :since")
        params["since"] = since
    rows = store.query(MATCHES_SQL.format(where=" AND ".join(where)), params)
    words = re.findall(r"\w+", text.lower())
    cases: dict[int, dict[str, Any]] = {}
    for row in rows:
        subject, body = row.pop("message_subject"), row.pop("body")
        if row["id"] not in cases:
            cases[row["id"]] = {**row, "snippet": snippet(f"{subject} {body}", words), "matches": 0}
        cases[row["id"]]["matches"] += 1
    return list(cases.values())[:limit]


def snippet(text: str, words: list[str], width: int = 12) -> str:
    """About `width` words around the first word that matched, the matches [bracketed]."""
    tokens = text.split()
    lowered = [t.lower() for t in tokens]
    hit = next((i for i, t in enumerate(lowered) if any(w in t for w in words)), 0)
    start = max(0, hit - width // 3)
    shown = []
    for token, low in zip(tokens[start : start + width], lowered[start : start + width], strict=True):
        shown.append(f"[{token}]" if any(w in low for w in words) else token)
    prefix = "…" if start else ""
    suffix = "…" if start + width < len(tokens) else ""
    return prefix + " ".join(shown) + suffix
