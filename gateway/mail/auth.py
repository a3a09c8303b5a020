"""Is the From address really the sender? DKIM we verify ourselves, or our own MTA's verdict."""

from __future__ import annotations

import functools
import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import authres
import dkim
from dkim.canonicalization import CanonicalizationPolicy
from publicsuffixlist import PublicSuffixList

from gateway.core.addresses import domain_of
from gateway.mail.message import InboundMessage

log = logging.getLogger("gateway.auth")


@functools.cache
def _suffixes() -> PublicSuffixList:
    """The public suffix list shipped inside the package (no network); read on first use, as
    loading it costs ~40 ms that `gateway deliver` should not pay for mail it never aligns."""
    return PublicSuffixList()


# Fields RFC 5322 §3.6 allows once; the gateway reads the first, a verifier may check the last.
SINGLETONS: tuple[str, ...] = ("from", "sender", "reply-to", "to", "cc", "subject", "date", "message-id")
SINGLETONS += ("in-reply-to", "references")
_COMMENT = re.compile(r"\([^()]*\)")

# Looks up a DNS TXT record (name as bytes) and returns its text, or None; tests pass their own.
TxtLookup = Callable[..., bytes | None]


@dataclass(frozen=True)
class Verdict:
    authenticated: bool
    reason: str


def organisational_domain(domain: str) -> str:
    """RFC 7489 §3.2: the public suffix plus one label; a bare public suffix is its own."""
    name = domain.lower().rstrip(".")
    return _suffixes().privatesuffix(name) or name


def aligned(signing_domain: str, from_domain: str) -> bool:
    """DMARC relaxed alignment: the signer and the From share one organisational domain."""
    return organisational_domain(signing_domain) == organisational_domain(from_domain)


def uncovered(checker: dkim.DKIM) -> str | None:
    """What of the message the signature just verified does not cover, or None when it covers all.

    dkimpy checks the last instances of each field listed in h= (RFC 6376 §5.4.2); a reader of
    the first would see an unsigned one. So every instance of a signed field must be signed, and
    the body must end where l= says.
    """
    signed = Counter(checker.include_headers)
    present = Counter(name.lower() for name, _ in checker.headers)
    extra = sorted(name.decode("ascii", "replace") for name in signed if present[name] > signed[name])
    if extra:
        return f"unsigned instances of {', '.join(extra)}"
    sig = checker.signature_fields
    if b"l" in sig:
        policy = CanonicalizationPolicy.from_c_value(sig.get(b"c", b"simple/simple"))
        if len(policy.canonicalize_body(checker.body)) > int(sig[b"l"]):
            return "body text beyond l="
    return None


def verify_dkim(raw: bytes, from_domain: str, lookup: TxtLookup) -> Verdict:
    """Check every DKIM signature; one that verifies and aligns with From is enough."""
    try:
        checker = dkim.DKIM(raw, timeout=3)
        count = sum(1 for name, _ in checker.headers if name.lower() == b"dkim-signature")
    except Exception as exc:  # dkimpy raises a variety of errors on malformed mail
        return Verdict(False, f"DKIM unreadable: {type(exc).__name__}")
    if count == 0:
        return Verdict(False, "no DKIM signature")
    reasons = []
    for index in range(count):
        try:
            ok = checker.verify(idx=index, dnsfunc=lookup)
        except Exception as exc:
            reasons.append(f"signature {index + 1}: {type(exc).__name__}")
            continue
        signer = (checker.domain or b"").decode("ascii", "replace")
        gap = uncovered(checker) if ok else None
        if ok and gap is None and aligned(signer, from_domain):
            return Verdict(True, f"DKIM pass, d={signer} aligned with From")
        outcome = "fail" if not ok else f"pass but {gap}" if gap else "pass but not aligned"
        reasons.append(f"d={signer}: {outcome}")
    return Verdict(False, "DKIM " + "; ".join(reasons))


def _claimed_id(value: str) -> str:
    """The authserv-id a header claims, read without a full parse (so unparseable ones count too)."""
    head = _COMMENT.sub(" ", value.split(";", 1)[0]).split()
    return head[0].lower() if head else ""


def from_authentication_results(message: InboundMessage, authserv_id: str) -> Verdict:
    """Trust only the topmost Authentication-Results, only when our MTA wrote it (RFC 8601 §5).

    Fail closed: a second header claiming our id, or ours not parsing, means no verdict to trust.
    """
    ours_id = authserv_id.lower()
    values = message.headers.get("authentication-results", [])
    if not values or _claimed_id(values[0]) != ours_id:
        return Verdict(False, f"no Authentication-Results from {authserv_id} on top")
    claims = sum(1 for value in values if _claimed_id(value) == ours_id)
    if claims > 1:
        # Our MTA removes inbound ones with our id; one left below ours was forged upstream.
        return Verdict(False, f"{claims} Authentication-Results claim {authserv_id}")
    try:
        parsed = authres.AuthenticationResultsHeader.parse_value(" ".join(values[0].split()))
    except Exception as exc:  # authres raises several kinds of error on what it cannot read
        return Verdict(False, f"Authentication-Results from {authserv_id} unreadable: {type(exc).__name__}")
    if str(parsed.authserv_id).lower() != ours_id:
        return Verdict(False, f"no Authentication-Results from {authserv_id} on top")
    from_domain = domain_of(message.from_addr)
    for result in parsed.results:
        props = {f"{p.type}.{p.name}": str(p.value) for p in result.properties}
        if result.method == "dmarc" and result.result == "pass":
            header_from = props.get("header.from", from_domain)
            if header_from.lower() == from_domain:
                return Verdict(True, f"DMARC pass for {from_domain} ({authserv_id})")
        if result.method == "dkim" and result.result == "pass":
            signer = props.get("header.d") or props.get("header.i", "").rpartition("@")[2]
            if signer and aligned(signer, from_domain):
                return Verdict(True, f"DKIM pass d={signer} ({authserv_id})")
    return Verdict(False, f"no DMARC pass or aligned DKIM pass from {authserv_id}")


def authenticate(
    message: InboundMessage, source: str, authserv_id: str, verify_own_dkim: bool, lookup: TxtLookup
) -> Verdict:
    if message.from_count != 1 or not message.from_addr:
        return Verdict(False, "not exactly one From address")
    repeated = [name for name in SINGLETONS if len(message.headers.get(name, ())) > 1]
    if repeated:
        # RFC 5322 allows one of each; a second is how a signed message gets unsigned text on top.
        return Verdict(False, f"more than one {', '.join(repeated)}")
    if source == "smtp":
        # We are the MTA here: any Authentication-Results in the message came from outside.
        if not verify_own_dkim:
            return Verdict(False, "DKIM verification disabled")
        if "dkim-signature" not in message.headers:
            # dkimpy would parse the whole message again only to find no signature.
            return Verdict(False, "no DKIM signature")
        return verify_dkim(message.raw, domain_of(message.from_addr), lookup)
    if authserv_id:
        return from_authentication_results(message, authserv_id)
    return Verdict(False, "auth.authserv_id is not set")


def dns_txt(name: bytes, timeout: float = 3) -> bytes | None:
    """The real DNS lookup (dnspython through dkimpy); failures mean "no key"."""
    try:
        return dkim.dnsplug.get_txt(name, timeout=timeout)  # type: ignore[no-any-return]
    except Exception as exc:
        log.info("DKIM key lookup for %r failed: %s", name, exc)
        return None
