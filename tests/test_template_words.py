"""Every template, in both languages, rendered with realistic data: no English in bokmål, no None, no ISO time."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time

from gateway.cases.commands import Rejected
from gateway.changes.plans import plan_change, reschedule_change
from gateway.changes.record import load
from gateway.core.config import load_config
from gateway.directory.registry import ROLES
from gateway.pipeline.process import process
from gateway.runtime import Runtime
from gateway.store.case_rows import existing_case
from tests.digest_support import add_failed_mail
from tests.support import REPO, mail, write_config
from tests.template_samples import ORGANISATION, OSLO, REPORTER, SAMPLES, SUBJECT, TEXT, World

TEMPLATES = REPO / "templates"
# Stored values and English words that must never reach a reader of bokmål mail. Words bokmål
# shares with English ("normal", "status", "sent" as in "for sent") are left out on purpose.
ENGLISH = re.compile(
    r"\b(incidents?|new|open|pending|resolved|closed|critical|high|low|change|question|equipment|"
    r"monitoring|other|first-response|resolution|planned|urgent|queued|failed|notice|reminder|"
    r"cancel|complete|words|attached|outage|degraded|organisation|reporter|priority|category|"
    r"monday|tuesday|wednesday|thursday|friday|saturday|sunday|january|february|march|june|july|"
    r"october|december|at \d\d:\d\d)\b",
    re.I,
)
# Role names are the registry's own Norwegian names and stay as they are, "Change" included.
ROLE_NAMES = re.compile("|".join(re.escape(name) for name in ROLES.values()))
ADDRESSES = re.compile(r"\S+@\S+|https?://\S+|<[^>\s]*@[^>\s]*>|gateway change show \d+|Message-ID")
ISO_TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d|\bUTC\b|[+-]00:00|\d\d:\d\d:\d\d")
# Two spaces between words, except the aligned columns after a label ("Endring:     …"), before
# right-aligned numbers, and in the aligned command help of the agents' notice.
DOUBLE_SPACE = re.compile(r"(?<=[^\s:])  +(?=[^\s\d])")
EMPTY_NAME = re.compile(r"\w ,|\(\s*\)|Hei ,|Hello ,|Dear ,")
NOW = datetime(2026, 3, 2, 10, 15, tzinfo=OSLO)


def templates() -> list[Path]:
    """Every text and HTML template an audience gets, found on disk so new ones are covered at once."""
    found = [p for p in TEMPLATES.glob("*/*/*.j2") if p.parent.name != "macros"]
    assert found, f"no templates under {TEMPLATES}"
    return sorted(found)


def _key(path: Path) -> tuple[str, str, str, str]:
    """(language, audience, event, kind) of templates/<lang>/<audience>/<event>.<kind>.j2."""
    event, kind = path.name.removesuffix(".j2").rsplit(".", 1)
    return path.parent.parent.name, path.parent.name, event, kind


def _world(runtime: Runtime, language: str) -> World:
    """One reporter's case, read back from the store, and a change to their organisation."""
    organization = runtime.registry().organizations[ORGANISATION[language]]
    reporter = next(c for c in organization.contacts if c.email == REPORTER[language])
    raw = mail(sender=f"{reporter.name} <{reporter.email}>", subject=SUBJECT[language], body=TEXT[language])
    case_id = process(runtime, raw, "pipe").case_id
    assert case_id is not None
    title = "Programvareoppgradering av svitsjer" if language == "nb" else "Switch software upgrade"
    start = datetime(2026, 3, 26, 8, 0, tzinfo=OSLO)  # a window on one day
    change_id = plan_change(
        runtime, [organization.id], start, start.replace(hour=10), title, "Halvårlig oppgradering.",
        "Nettet er borte i 15 minutter.", False, "mona",
    )  # fmt: skip
    with runtime.store.write() as conn:
        first = load(conn, change_id)
    # Moved to a window over midnight, so both shapes of a window are rendered.
    night = start.replace(day=27, hour=22)
    reschedule_change(runtime, change_id, night, night + timedelta(hours=3), False, "mona")
    with runtime.store.write() as conn:
        moved, case = load(conn, change_id), existing_case(conn, case_id)
    return World(runtime, language, organization, reporter, case, first, moved, NOW, False)


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, World]]:
    """A real store with one case per language and its changes, as of a Monday morning in March."""
    runtime = Runtime(load_config(write_config(tmp_path_factory.mktemp("words"))))
    with freeze_time(NOW):
        made = {language: _world(runtime, language) for language in ("nb", "en")}
    # Two weeks on, so the digests list the case as over its target and the change as coming,
    # and a receipt the relay refused yesterday is among the mail that did not arrive.
    for world in made.values():
        world.now = NOW + timedelta(days=14)
    add_failed_mail(runtime.store, NOW + timedelta(days=13), REPORTER["nb"], "550 5.1.1 mailbox unavailable")
    yield made
    runtime.close()


def problems(text: str, language: str, html: bool) -> list[str]:
    """What a reader should never see in a mail of this language."""
    if html:
        text = re.sub(r"<[^>]+>|&nbsp;|&#\d+;", " ", text)
    found = [f"unrendered {m!r}" for m in re.findall(r"\{\{|\{%|\}\}", text)]
    found += [f"None in {line!r}" for line in text.splitlines() if re.search(r"\bNone\b", line)]
    found += [f"ISO or UTC time {m.group(0)!r}" for m in ISO_TIME.finditer(text)]
    if not html:
        for line in text.splitlines():
            if DOUBLE_SPACE.search(line.strip()) and not line.lstrip().startswith("#"):
                found.append(f"double space in {line!r}")
            if EMPTY_NAME.search(line):
                found.append(f"a missing name shows in {line!r}")
    if language == "nb":
        plain = ADDRESSES.sub(" ", ROLE_NAMES.sub(" ", text))
        found += [
            f"English {m.group(0)!r} in {line!r}"
            for line in plain.splitlines()
            for m in ENGLISH.finditer(line)
        ]
    return found


def render(world: World, path: Path) -> str:
    language, audience, event, kind = _key(path)
    context = SAMPLES[f"{audience}/{event}"](world)
    templates = world.runtime.templates
    if kind == "html":
        return templates.render_html(language, audience, event, context | {"subject": "Oversikt"})
    rendered = templates.render(language, audience, event, context)
    return rendered.subject + "\n\n" + rendered.body


def test_every_template_has_sample_data() -> None:
    """A template someone adds without sample data here fails by name instead of going unchecked."""
    missing = sorted({f"{a}/{e}" for _, a, e, _ in map(_key, templates()) if f"{a}/{e}" not in SAMPLES})
    assert not missing, f"templates with no sample data in tests/template_samples.py: {missing}"


@pytest.mark.parametrize("bare", [False, True], ids=["names", "no-names"])
def test_every_template_reads_as_its_language(worlds: dict[str, World], bare: bool) -> None:
    """No English values in bokmål, no None, no double spaces, no ISO or UTC time, nothing unrendered."""
    report = []
    for path in templates():
        language, audience, event, kind = _key(path)
        if f"{audience}/{event}" not in SAMPLES:
            continue  # named by the test above
        world = replace(worlds[language], bare=bare)
        text = render(world, path)
        report += [f"{path.relative_to(TEMPLATES)}: {p}" for p in problems(text, language, kind == "html")]
    assert not report, "\n".join(report)


def test_rejected_commands_are_explained_in_the_agents_language(worlds: dict[str, World]) -> None:
    """A bad `#` line is named as written, and why it was refused is said in the mail's own language."""
    lines = [
        Rejected("#prioritet superviktig", "unknown-value", "priority", "superviktig"),
        Rejected("#tildel nobody", "no-agent", "assign", "nobody"),
        Rejected("#lukk", "unknown-command", value="lukk"),
    ]
    expected = {
        "nb": ["ukjent verdi «superviktig»; bruk en av: kritisk, høy, normal, lav",
               "ingen saksbehandler heter «nobody»", "ukjent kommando"],
        "en": ['unknown value "superviktig"; use one of: critical, high, normal, low',
               'no agent is called "nobody"', "unknown command"],
    }  # fmt: skip
    for language, words in expected.items():
        world = worlds[language]
        context = SAMPLES["staff/command-result"](world) | {"errors": lines, "changes": []}
        rendered = world.runtime.templates.render(language, "staff", "command-result", context)
        text = rendered.subject + "\n\n" + rendered.body
        assert all(line.line in text for line in lines)
        assert all(word in text for word in words), text
        assert problems(text, language, html=False) == []
