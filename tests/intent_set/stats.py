"""Check and summarise the labelled intent set (dev.jsonl).

Usage: python3 tests/intent_set/stats.py [FILE] [--quotas]

Prints counts per lang, intent, outage, role and client. Exits 1 if a line is not a JSON
object, a field is missing, unknown or invalid, an id is not kebab-case or repeats, or two
mails have the same body. With --quotas it also exits 1 when a quota from the README fails.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

LANGS = ("nb", "nn", "en")
CLIENTS = ("outlook", "iphone", "gmail", "apple-mail", "thunderbird", "android", "webmail")
INTENTS = ("report", "request", "question", "purchase", "admin")
ROLES = ("technical", "incidents", "change", "local-support", "administrative")
FIELDS = ("id", "lang", "client", "subject", "body", "intent", "outage", "role", "note")
ID_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")

# A fault report "mentions a change word"; an order "uses none of the words" (substring match, strict).
CHANGE_WORDS = re.compile(
    r"vlan|port|brannmur|firewall|endring|endre|bestil|upgrade|oppgrader|change|ordered", re.I
)
ORDER_WORDS = re.compile(r"vlan|port|brannmur|firewall|endring|endre|bestill", re.I)

TARGET_SHARE = {"report": 0.40, "request": 0.22, "question": 0.18, "purchase": 0.08, "admin": 0.12}
SHARE_TOLERANCE = 0.03


def check_record(rec: object) -> list[str]:
    if not isinstance(rec, dict):
        return ["not a JSON object"]
    errors = [f"missing field {f!r}" for f in FIELDS if f not in rec]
    errors += [f"unknown field {f!r}" for f in rec if f not in FIELDS]
    if errors:
        return errors
    for f in ("id", "lang", "client", "subject", "body", "intent", "role", "note"):
        if not isinstance(rec[f], str):
            errors.append(f"{f} is not a string")
    if not isinstance(rec["outage"], bool):
        errors.append("outage is not a boolean")
    if errors:
        return errors
    if not ID_RE.match(rec["id"]):
        errors.append(f"id {rec['id']!r} is not kebab-case")
    for f, allowed in (("lang", LANGS), ("client", CLIENTS), ("intent", INTENTS), ("role", ROLES)):
        if rec[f] not in allowed:
            errors.append(f"{f} {rec[f]!r} not one of {', '.join(allowed)}")
    if not rec["body"].strip():
        errors.append("body is empty")
    if not rec["note"].strip():
        errors.append("note is empty")
    if rec["outage"] and rec["intent"] != "report":
        errors.append("outage is true but intent is not report")
    return errors


def load(path: Path) -> tuple[list[dict[str, object]], list[str]]:
    records: list[dict[str, object]] = []
    errors: list[str] = []
    seen_ids: dict[str, int] = {}
    seen_bodies: dict[str, int] = {}
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                errors.append(f"line {n}: empty line")
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                errors.append(f"line {n}: invalid JSON ({exc.msg})")
                continue
            problems = check_record(rec)
            if problems:
                errors += [f"line {n}: {p}" for p in problems]
                continue
            ident = rec["id"]
            if ident in seen_ids:
                errors.append(f"line {n}: id {ident!r} repeats line {seen_ids[ident]}")
            seen_ids.setdefault(ident, n)
            body = " ".join(rec["body"].split()).lower()
            if body in seen_bodies:
                errors.append(f"line {n}: body duplicates line {seen_bodies[body]}")
            seen_bodies.setdefault(body, n)
            records.append(rec)
    return records, errors


def table(title: str, counts: Counter[str], total: int, order: tuple[str, ...] | None = None) -> None:
    print(title)
    keys = list(order) if order else sorted(counts)
    for k in keys:
        c = counts.get(k, 0)
        print(f"  {k:<15}{c:>5}  {100 * c / total:5.1f} %")


def quotas(recs: list[dict[str, object]]) -> list[tuple[str, bool]]:
    total = len(recs)
    lang = Counter(str(r["lang"]) for r in recs)
    intent = Counter(str(r["intent"]) for r in recs)
    outage = [r for r in recs if r["outage"]]
    reports = [r for r in recs if r["intent"] == "report"]
    requests = [r for r in recs if r["intent"] == "request"]
    text = {id(r): f"{r['subject']}\n{r['body']}" for r in recs}
    change_reports = sum(1 for r in reports if CHANGE_WORDS.search(text[id(r)]))
    plain_orders = sum(1 for r in requests if not ORDER_WORDS.search(text[id(r)]))
    other_role_orders = sum(1 for r in requests if r["role"] != "technical")
    out_langs = {str(r["lang"]) for r in outage}
    results = [
        (f"at least 340 mails ({total})", total >= 340),
        (f"nb >= 55 % ({lang['nb']})", lang["nb"] >= 0.55 * total),
        (f"nn >= 12 % ({lang['nn']})", lang["nn"] >= 0.12 * total),
        (f"en >= 27 % ({lang['en']})", lang["en"] >= 0.27 * total),
        (
            f"at least 30 outage mails ({len(outage)}), in all three languages ({', '.join(sorted(out_langs))})",
            len(outage) >= 30 and out_langs == set(LANGS),
        ),
        (f"at least 50 reports with change words ({change_reports})", change_reports >= 50),
        (
            f"at least 40 orders without vlan/port/brannmur/firewall/endring/endre/bestill ({plain_orders})",
            plain_orders >= 40,
        ),
        (
            f"orders from non-technical roles 15-35 % ({other_role_orders} of {len(requests)})",
            bool(requests) and 0.15 <= other_role_orders / len(requests) <= 0.35,
        ),
        ("reports from every role", {str(r["role"]) for r in reports} == set(ROLES)),
    ]
    for name, share in TARGET_SHARE.items():
        got = intent[name] / total if total else 0.0
        results.append(
            (
                f"{name} share {100 * got:.1f} % within {100 * share:.0f} +/- {100 * SHARE_TOLERANCE:.0f} %",
                abs(got - share) <= SHARE_TOLERANCE,
            )
        )
    return results


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    strict = "--quotas" in argv
    path = Path(args[0]) if args else Path(__file__).with_name("dev.jsonl")
    recs, errors = load(path)
    for e in errors:
        print(f"ERROR {e}")
    total = len(recs)
    print(f"{path}: {total} valid mails, {len(errors)} errors")
    if total:
        table("lang", Counter(str(r["lang"]) for r in recs), total, LANGS)
        table("intent", Counter(str(r["intent"]) for r in recs), total, INTENTS)
        table("outage", Counter(str(r["outage"]).lower() for r in recs), total, ("true", "false"))
        table("role", Counter(str(r["role"]) for r in recs), total, ROLES)
        table("client", Counter(str(r["client"]) for r in recs), total, CLIENTS)
        print("lang x intent")
        for lg in LANGS:
            row = Counter(str(r["intent"]) for r in recs if r["lang"] == lg)
            print(f"  {lg:<4}" + "".join(f"{i}={row.get(i, 0):<4}" for i in INTENTS))
        print(
            "outage by lang: "
            + ", ".join(f"{lg}={sum(1 for r in recs if r['outage'] and r['lang'] == lg)}" for lg in LANGS)
        )
        for it in ("report", "request"):
            row = Counter(str(r["role"]) for r in recs if r["intent"] == it)
            print(f"{it} by role: " + ", ".join(f"{ro}={row.get(ro, 0)}" for ro in ROLES))
        print("quotas")
        failed = 0
        for name, ok in quotas(recs):
            failed += not ok
            print(f"  {'ok  ' if ok else 'FAIL'} {name}")
        if strict and failed:
            errors.append(f"{failed} quota(s) failed")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
