"""A realistic, deterministic mix of customer mail for the benchmarks (shared by both scripts).

Every message comes from a contact point in the repo's data/contacts.toml and is written so the
shipped rules open a new case and queue exactly one receipt for it: no reply headers, no subject
tag, no order/change words from a non-technical contact, no equipment-shop words, nothing that
looks automated. That makes the end-to-end count check exact (one case and one receipt per mail).
"""

from __future__ import annotations

import base64
import quopri
import random
import tomllib
from dataclasses import dataclass
from email.header import Header
from email.utils import formataddr, formatdate
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SERVICE_ADDRESS = "kontakt@service.example"

# (kind, weight): how often each shape of mail appears in the mix.
KINDS: tuple[tuple[str, int], ...] = (
    ("plain-utf8", 35),
    ("latin1-qp", 20),
    ("html-alternative", 20),
    ("outlook-cp1252", 15),
    ("attachment-50k", 10),
)

SUBJECTS = (
    "Nettet er nede på rom {room}",
    "Trådløst nett virker ikke i gymsalen",
    "Treg forbindelse på lærerrommet i {floor}. etasje",
    "Får ikke koblet til skriveren på rom {room}",
    "Ingen dekning i kantina etter lunsj",
    "Ustabilt nett på møterom {room}",
    "Spørsmål om gjestenettet på Ærfuglveien",
    "Hjemmekontor: får ikke logget på VPN",
    "Brudd på fiberen til Øvre Sæter barnehage",
    "Nettverkskontakten på rom {room} fungerer ikke",
    "Spørsmål om åpningstider i høstferien",
    "Smartboard på rom {room} mister nettet",
)

BODIES = (
    "Hei,\n\nnettet er nede på rom {room} siden i morges. Elevene får ikke logget på, og"
    " lærerne må bruke mobilnett. Vi har prøvd å starte PC-ene på nytt uten at det hjalp.\n\n"
    "Kan dere se på det så snart som mulig?\n\nMed vennlig hilsen\n{name}\n",
    "Hei!\n\nDet trådløse nettet er svært ustabilt i {floor}. etasje. Det faller ut flere ganger i"
    " timen, særlig rundt kl. 10 når alle klassene er på. Gjelder både SSID «Skole» og «Gjest».\n\n"
    "Hilsen {name}\n",
    "Hei,\n\nvi har et spørsmål: hvordan får besøkende tilgang til gjestenettet på møterommet?"
    " Må de registrere seg med telefonnummer først, eller finnes det en felles kode?\n\n"
    "Takk for hjelpen!\n{name}\n",
    "Hei,\n\nfiberen til Øvre Sæter ser ut til å ha brudd. Lampene på boksen i kjelleren blinker"
    " rødt, og ingen av de ansatte får kontakt med fagsystemet. Gravearbeid i veien i går.\n\n"
    "Mvh\n{name}\n{phone}\n",
    "Hei,\n\nforbindelsen er veldig treg på lærerrommet (rom {room}). Nedlasting går på rundt"
    " 2 Mbit/s, mens vi vanligvis har over 200. Har dere hendelser i området i dag?\n\n"
    "Vennlig hilsen\n{name}\n",
)

HTML_TEMPLATE = """<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8">
<style>p {{ margin: 0 0 8px 0; font-family: Calibri, sans-serif; }}</style></head>
<body><div dir="ltr"><p>Hei,</p>
<p>{paragraph}</p>
<p>Med vennlig hilsen<br><b>{name}</b><br>{org}<br>Tlf. {phone}</p>
</div></body></html>
"""


@dataclass(frozen=True)
class Sender:
    name: str
    email: str
    org: str
    phone: str


def contact_senders(registry: Path | None = None) -> list[Sender]:
    """Every distinct contact address in the registry (agents excluded: they get no receipt)."""
    data = tomllib.loads((registry or REPO / "data" / "contacts.toml").read_text(encoding="utf-8"))
    seen: dict[str, Sender] = {}
    for org in data.get("organization", []):
        for contact in org.get("contact", []):
            email = contact["email"].lower()
            if email not in seen:
                seen[email] = Sender(contact["name"], email, org["name"], contact.get("phone", ""))
    return list(seen.values())


def _netinfo_log(rng: random.Random, size: int = 50_000) -> bytes:
    """A plausible netinfo.log: ping/traceroute/ipconfig output, about `size` bytes."""
    lines = [f"netinfo 2.3 - innsamlet på ELEV-PC-{rng.randint(1, 400):03d}", ""]
    total = 0
    seq = 0
    while total < size:
        seq += 1
        ms = rng.uniform(0.4, 380.0)
        if rng.random() < 0.05:
            line = f"Forespørsel tidsavbrutt. (icmp_seq={seq})"
        else:
            host = f"10.{rng.randint(0, 40)}.{rng.randint(0, 255)}.1"
            line = f"64 bytes fra {host}: icmp_seq={seq} ttl=63 tid={ms:.2f} ms"
        lines.append(line)
        total += len(line.encode("utf-8")) + 2
    return "\r\n".join(lines).encode("utf-8")


def _wrap_b64(data: bytes) -> str:
    text = base64.b64encode(data).decode("ascii")
    return "\r\n".join(text[i : i + 76] for i in range(0, len(text), 76))


def _qp(text: str, charset: str) -> str:
    return quopri.encodestring(text.replace("\n", "\r\n").encode(charset)).decode("ascii")


def _crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


class MailMix:
    """Generates the i-th message of a run; same seed and run id give the same bytes."""

    def __init__(self, run_id: str, seed: int = 1, registry: Path | None = None) -> None:
        self.run_id = run_id
        self.rng = random.Random(seed)
        self.senders = contact_senders(registry)
        kinds, weights = zip(*KINDS, strict=True)
        self._kinds = list(kinds)
        self._weights = list(weights)
        # A few attachments, reused: generating 50 KB of log per message would dominate the setup.
        self._logs = [_netinfo_log(random.Random(seed + k)) for k in range(4)]

    def message(self, i: int) -> tuple[str, str, bytes, str]:
        """(kind, envelope sender, raw bytes, Message-ID) for message number i."""
        rng = self.rng
        sender = self.senders[i % len(self.senders)]
        kind = rng.choices(self._kinds, self._weights)[0]
        fields = {
            "room": rng.randint(1, 240),
            "floor": rng.randint(1, 4),
            "name": sender.name,
            "phone": sender.phone or "22 33 44 55",
        }
        subject = rng.choice(SUBJECTS).format(**fields)
        body = rng.choice(BODIES).format(**fields)
        domain = sender.email.partition("@")[2]
        message_id = f"<bench.{self.run_id}.{i}.{rng.getrandbits(32):08x}@{domain}>"
        builder = getattr(self, "_" + kind.replace("-", "_"))
        raw = builder(sender, subject, body, message_id, i)
        return kind, sender.email, raw, message_id

    def _head(self, sender: Sender, subject_header: str, message_id: str, extra: list[str]) -> list[str]:
        return [
            f"From: {formataddr((str(Header(sender.name, 'utf-8')), sender.email))}",
            f"To: Servicesenteret <{SERVICE_ADDRESS}>",
            f"Subject: {subject_header}",
            f"Date: {formatdate(localtime=True)}",
            f"Message-ID: {message_id}",
            "MIME-Version: 1.0",
            *extra,
        ]

    def _plain_utf8(self, sender: Sender, subject: str, body: str, message_id: str, i: int) -> bytes:
        head = self._head(
            sender,
            Header(subject, "utf-8").encode(),
            message_id,
            [
                "User-Agent: Mozilla Thunderbird",
                "Content-Type: text/plain; charset=UTF-8; format=flowed",
                "Content-Transfer-Encoding: 8bit",
            ],
        )
        return ("\r\n".join(head) + "\r\n\r\n" + _crlf(body)).encode("utf-8")

    def _latin1_qp(self, sender: Sender, subject: str, body: str, message_id: str, i: int) -> bytes:
        head = self._head(
            sender,
            Header(subject, "iso-8859-1").encode(),
            message_id,
            [
                "X-Mailer: Apple Mail (2.3774.500.171.1.1)",
                "Content-Type: text/plain; charset=iso-8859-1",
                "Content-Transfer-Encoding: quoted-printable",
            ],
        )
        return ("\r\n".join(head) + "\r\n\r\n" + _qp(body, "iso-8859-1")).encode("ascii")

    def _html_alternative(self, sender: Sender, subject: str, body: str, message_id: str, i: int) -> bytes:
        boundary = f"=_alt_{i:08d}"
        paragraph = " ".join(body.split("\n\n")[1:2]) or body
        markup = HTML_TEMPLATE.format(
            paragraph=paragraph.replace("\n", "<br>"), name=sender.name, org=sender.org, phone=sender.phone
        )
        head = self._head(
            sender,
            Header(subject, "utf-8").encode(),
            message_id,
            [
                "X-Mailer: Microsoft Outlook 16.0",
                f'Content-Type: multipart/alternative; boundary="{boundary}"',
            ],
        )
        parts = [
            f"--{boundary}",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: quoted-printable",
            "",
            _qp(body, "utf-8"),
            f"--{boundary}",
            "Content-Type: text/html; charset=utf-8",
            "Content-Transfer-Encoding: quoted-printable",
            "",
            _qp(markup, "utf-8"),
            f"--{boundary}--",
            "",
        ]
        return ("\r\n".join(head) + "\r\n\r\n" + "\r\n".join(parts)).encode("ascii")

    def _outlook_cp1252(self, sender: Sender, subject: str, body: str, message_id: str, i: int) -> bytes:
        # Outlook on Windows: cp1252 body with typographic quotes and dashes, Thread-Index etc.
        body = body.replace("«", "“").replace("»", "”") + "\n– sendt fra Outlook\n"
        boundary = f"_000_{i:08d}AM0PR02MB{i % 9999:04d}eurprd02_"
        markup = (
            '<html><head><meta http-equiv="Content-Type" content="text/html; charset=Windows-1252">'
            '</head><body lang="NO-BOK"><div class="WordSection1"><p class="MsoNormal">'
            + body.replace("\n", "<br>")
            + "</p></div></body></html>"
        )
        head = self._head(
            sender,
            Header(subject, "windows-1252").encode(),
            message_id,
            [
                f"Thread-Topic: {Header(subject, 'windows-1252').encode()}",
                f"Thread-Index: AdnX{i:08d}Q0mTkK1xR2yYq5TzA==",
                "Accept-Language: nb-NO, en-US",
                "Content-Language: nb-NO",
                "X-MS-Has-Attach:",
                "X-MS-TNEF-Correlator:",
                "X-Mailer: Microsoft Outlook 16.0",
                f'Content-Type: multipart/alternative; boundary="{boundary}"',
            ],
        )
        parts = [
            f"--{boundary}",
            'Content-Type: text/plain; charset="Windows-1252"',
            "Content-Transfer-Encoding: quoted-printable",
            "",
            _qp(body, "cp1252"),
            f"--{boundary}",
            'Content-Type: text/html; charset="Windows-1252"',
            "Content-Transfer-Encoding: quoted-printable",
            "",
            _qp(markup, "cp1252"),
            f"--{boundary}--",
            "",
        ]
        return ("\r\n".join(head) + "\r\n\r\n" + "\r\n".join(parts)).encode("ascii")

    def _attachment_50k(self, sender: Sender, subject: str, body: str, message_id: str, i: int) -> bytes:
        boundary = f"------------bench{i:012d}"
        body += "\nLogg fra netinfo ligger vedlagt.\n"
        head = self._head(
            sender,
            Header(subject, "utf-8").encode(),
            message_id,
            ["User-Agent: Mozilla Thunderbird", f'Content-Type: multipart/mixed; boundary="{boundary}"'],
        )
        parts = [
            "This is a multi-part message in MIME format.",
            f"--{boundary}",
            "Content-Type: text/plain; charset=UTF-8",
            "Content-Transfer-Encoding: 8bit",
            "",
            _crlf(body),
            f"--{boundary}",
            'Content-Type: text/plain; charset=UTF-8; name="netinfo.log"',
            'Content-Disposition: attachment; filename="netinfo.log"',
            "Content-Transfer-Encoding: base64",
            "",
            _wrap_b64(self._logs[i % len(self._logs)]),
            f"--{boundary}--",
            "",
        ]
        return ("\r\n".join(head) + "\r\n\r\n" + "\r\n".join(parts)).encode("utf-8")


def generate(
    count: int, run_id: str, seed: int = 1, registry: Path | None = None
) -> list[tuple[str, str, bytes, str]]:
    mix = MailMix(run_id, seed, registry)
    return [mix.message(i) for i in range(count)]
