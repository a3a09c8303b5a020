"""Reading mail as a person does: sender, subject, new text, attachments and repairs, on the reading fixtures."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.cases.escalation import Evidence
from gateway.directory.who_wrote import Sender
from gateway.mail import charsets, header_repair
from gateway.mail.html_text import html_to_text
from gateway.mail.message import parse
from gateway.mail.quoting import new_text, strip_quoted
from gateway.rules.predicates import Facts

FIXTURES = Path(__file__).parent / "fixtures" / "reading"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.eml"))
_SPACE = re.compile(r"\s+")


def _flat(text: str) -> str:
    return _SPACE.sub(" ", text.replace("\xa0", " ")).strip()


def test_every_fixture_has_a_sidecar() -> None:
    """The folder holds the 74 mails, each with its expectations."""
    assert len(NAMES) == 74
    assert all((FIXTURES / f"{name}.expected.json").exists() for name in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_fixture_reads_as_expected(name: str) -> None:
    """Each fixture's sender, subject, attachments, new text and defects are what its sidecar says."""
    expected = json.loads((FIXTURES / f"{name}.expected.json").read_text(encoding="utf-8"))
    raw = (FIXTURES / f"{name}.eml").read_bytes()
    msg = parse(raw)
    assert msg.raw == raw
    assert msg.from_addr == expected["from"]
    assert msg.subject == expected["subject"]
    assert msg.attachments == expected["attachments"]
    new = _flat(strip_quoted(msg.body, msg.subject))
    for wanted in expected["new_text_contains"]:
        assert _flat(wanted) in new, wanted
    for unwanted in expected["new_text_excludes"]:
        assert _flat(unwanted) not in new, unwanted
    if expected["defects_expected"]:
        assert msg.defects, "a repaired mail records a defect"


def test_names_of_unnamed_parts_and_attached_mail_are_stable() -> None:
    """Parsing the same mail twice lists the same names for unnamed parts and attached messages."""
    for name in ("att_04_message_rfc822_unnamed", "att_05_message_rfc822_named", "att_06_unnamed_parts"):
        raw = (FIXTURES / f"{name}.eml").read_bytes()
        assert parse(raw).attachments == parse(raw).attachments != []


def test_attached_mail_is_not_merged_into_the_body() -> None:
    """The text of an attached message/rfc822 stays out of the body."""
    msg = parse((FIXTURES / "att_05_message_rfc822_named.eml").read_bytes())
    inner = msg.raw.split(b"message/rfc822", 1)[1]
    inner_body = inner.split(b"\n\n", 2)[2].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    assert inner_body and inner_body not in msg.body


def test_netinfo_log_inside_winmail_dat_counts_for_escalation() -> None:
    """A netinfo.log packed in winmail.dat is listed, so escalation sees the attached log."""
    msg = parse((FIXTURES / "tnef_01_netinfo_log.eml").read_bytes())
    evidence = Evidence(msg.body, msg.attachments, Sender(msg.from_addr, msg.from_name, "contact"))
    assert evidence.netinfo()
    assert b"winmail.dat" in msg.raw


def test_forwarded_mail_stays_and_quotes_go() -> None:
    """Forwarded mail is content; a reply header above quoted history is cut."""
    fwd = "FYI\n\n---------- Forwarded message ---------\nFrom: A <a@x.example>\nSubject: Nede\n\nSvitsjen er nede."
    assert "Svitsjen er nede." in strip_quoted(fwd)
    reply = "Takk.\n\n-----Opprinnelig melding-----\nFra: A\nSendt: i dag\nTil: B\nEmne: x\n\nGammel tekst"
    assert strip_quoted(reply) == "Takk."
    outlook = (
        "Ok.\n\nFra: Erik <e@x.example>\nSendt: mandag 3. mars 2025 10:01\nTil: Kari\nEmne: Re: x\n\nGammelt"
    )
    assert strip_quoted(outlook) == "Ok."
    assert "Gammel" in strip_quoted(outlook.replace("Ok.", "Se under."), "VS: x")


def test_old_gmail_attribution_without_verb_is_cut() -> None:
    """A date and an address alone above '>' lines is a quote header too."""
    assert strip_quoted("Yes.\n\n2012/11/16 Dan <dan@x.example>\n\n> hi") == "Yes."
    assert "2012/11/16" in strip_quoted("Yes.\n\n2012/11/16 Dan <dan@x.example>\n\nnot a quote")


def test_only_real_signatures_go() -> None:
    """Client lines go; a sentence that starts like one stays."""
    assert strip_quoted("Nettet er nede.\n\nSendt fra min iPhone") == "Nettet er nede."
    assert strip_quoted("Nettet er nede.\n\n-- \nKari\n41 23 45 67") == "Nettet er nede."
    sentence = "Sent from my desk, is much easier to read the logs here."
    assert strip_quoted(f"Hi,\n\n{sentence}\n\nSarah") == f"Hi,\n\n{sentence}\n\nSarah"


def test_nothing_left_keeps_the_whole_text() -> None:
    """When every line is quoted history, the whole text is kept and that is said."""
    reading = new_text("> gammel tekst\n> mer")
    assert reading.kept_whole and reading.text == "> gammel tekst\n> mer"
    assert not new_text("Ny tekst\n> gammel").kept_whole


def test_body_charsets_follow_the_bytes_not_the_label() -> None:
    """Valid UTF-8 wins, cp1252 under a wrong label is found, GB2312 reads as GB18030, ISO-2022-JP extensions."""
    assert charsets.decode("på".encode(), "iso-8859-1") == ("på", "CharsetMismatch: iso-8859-1 read as utf-8")
    text, defect = charsets.decode("Nettet på rom 204 – både".encode("cp1252"), "us-ascii")
    assert text == "Nettet på rom 204 – både" and defect
    assert charsets.decode("“x”".encode("cp1252"), "iso-8859-1")[0] == "“x”"
    assert charsets.decode("宿舍的网络一直连不上".encode("gb18030"), "gb2312")[0] == "宿舍的网络一直连不上"
    assert charsets.decode("①".encode("iso2022_jp_2"), "iso-2022-jp")[0] == "①"
    assert charsets.decode("Trådløst".encode("iso-8859-15"), "iso-8859-15") == ("Trådløst", None)


def test_broken_headers_are_recovered_with_a_defect() -> None:
    """An unindented fold and a banner line no longer hide From and Subject."""
    folded = b"From: Kari <kari@nordby-skole.example>\nSubject: Nettet er nede og\nskriveren svarer ikke\nTo: k@service.example\n\nHei\n"
    msg = parse(folded)
    assert msg.subject == "Nettet er nede og skriveren svarer ikke" and msg.body == "Hei"
    assert any(d.startswith("HeaderRepaired") for d in msg.defects)
    banner = b"---- Original email message ----\nFrom: Ola <ola@x.example>\nSubject: Hei\n\nTekst\n"
    msg = parse(banner)
    assert (msg.from_addr, msg.subject, msg.body) == ("ola@x.example", "Hei", "Tekst")
    assert header_repair.repair(b"From: a@x.example\nSubject: ok\n\nbody\n") is None


def test_html_cells_and_items_apart_without_title_style_script() -> None:
    """Cells and list items come out apart; title, style, script and comments stay out."""
    page = (
        "<html><head><title>Tittel</title><style>p{color:red}</style></head><body>"
        "<!-- a > b --><table><tr><td>Eduroam nede</td><td>Kablet virker</td></tr></table>"
        "<ul><li>en</li><li>to</li></ul><script>if (a > b) {}</script></body></html>"
    )
    text = html_to_text(page)
    assert "Eduroam nede" in text and "Kablet virker" in text and "Eduroam nedeKablet" not in text
    assert "Tittel" not in text and "color" not in text and "a > b" not in text and "if (a" not in text


def _scales_linearly(make: Callable[[int], str | bytes], run: Callable[[str | bytes], object]) -> None:
    """10x the input costs at most about 10x the time (best of three, with a margin for noise)."""

    def best(size: int) -> float:
        data = make(size)
        times = []
        for _ in range(3):
            started = time.perf_counter()
            run(data)
            times.append(time.perf_counter() - started)
        return min(times)

    small, large = best(1_000), best(10_000)
    assert large <= 10 * small * 2 + 0.05, f"{small:.4f}s -> {large:.4f}s"


LINEAR_CASES: dict[str, tuple[Callable[[int], str | bytes], Callable[[str | bytes], object]]] = {
    "attribution lines": (
        lambda n: "On 3 Mar " * n + "\n" + "Den 3. mars skrev " * n,
        lambda t: new_text(str(t)),
    ),
    "outlook blocks": (lambda n: "From: x\nSent: y\nTo: z\n" * n, lambda t: new_text(str(t))),
    "separators": (lambda n: "-" * (50 * n) + " Original Message", lambda t: new_text(str(t))),
    "client lines": (lambda n: ("Sent from my " + "x " * 5 + "\n") * n, lambda t: new_text(str(t))),
    "quoted lines": (lambda n: "> x\n" * n + "svar\n" + "> y\n" * n, lambda t: new_text(str(t))),
    "dated addresses": (
        lambda n: "2012/11/16 " + "a " * n + "<a@" + "b" * n + ">\n> x",
        lambda t: new_text(str(t)),
    ),
    "links": (lambda n: "Sendt fra <https://" + "a" * n * 10 + "\n", lambda t: new_text(str(t))),
    "header repair": (
        lambda n: b"From: a@x.example\n" + b"X-A-B c\nunindented text\n" * n + b"Subject: s\n\nbody",
        lambda b: header_repair.repair(bytes(b) if isinstance(b, bytes) else b""),
    ),
    "banner": (lambda n: b"-- " + b"-" * n + b" --\nFrom: a@x.example\n\nb", lambda b: parse(bytes(b))),  # type: ignore[arg-type]
    "html script tags": (lambda n: "<p>" + "<script>" * n + "x", lambda t: html_to_text(str(t))),
    "html nesting": (lambda n: "<div>" * n + "x" + "</div>" * n, lambda t: html_to_text(str(t))),
    "charset guess": (
        lambda n: "påå ø ".encode("cp1252") * n * 5,
        lambda b: charsets.decode(bytes(b), "us-ascii"),
    ),  # type: ignore[arg-type]
    "encoded words": (
        lambda n: b"Subject: " + b"=?iso-8859-1?q?p=C3=A5?= " * (n // 20) + b"\n\n",
        lambda b: parse(bytes(b)),
    ),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("case", sorted(LINEAR_CASES))
def test_patterns_are_linear_on_stranger_text(case: str) -> None:
    """Each new pattern costs time in proportion to the text a stranger sends."""
    make, run = LINEAR_CASES[case]
    _scales_linearly(make, run)


def test_crafted_page_of_script_tags_is_fast() -> None:
    """A 257 KB page of 10,000 <script> tags converts in well under a second."""
    page = ("<html><body>" + "<script>" * 10_000).ljust(257 * 1024, "x")
    started = time.perf_counter()
    html_to_text(page)
    assert time.perf_counter() - started < 1.0


def test_rules_read_the_new_text_not_the_quote() -> None:
    """A word that is only in the quoted history is not in the text rules search."""
    raw = (
        b"From: Kari <kari@nordby-skole.example>\nSubject: SV: [SSC#4] Skriver\nContent-Type: text/plain; charset=utf-8\n\n"
        b"Takk, det virker.\n\nDen 3. mars 2025 kl. 10:01 skrev Servicesenteret <kontakt@service.example>:\n> Kritisk feil\n"
    )
    facts = Facts(
        parse(raw), Sender("kari@nordby-skole.example", "Kari", "contact"), "open", False, False, True
    )
    assert "Takk, det virker." in facts.text("body") and "Kritisk" not in facts.text("all")
