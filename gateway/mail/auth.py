"""Is the From address really the sender? DKIM we verify ourselves, or our own MTA's verdict."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import authres
import dkim

from gateway.core.addresses import domain_of
from gateway.mail.message import InboundMessage

log = logging.getLogger("gateway.auth")

# Looks up a DNS TXT record (name as bytes) and returns its text, or None; tests pass their own.
TxtLookup = Callable[..., bytes | None]


@dataclass(frozen=True)
class Verdict:
    authenticated: bool
    reason: str


def aligned(signing_domain: str, from_domain: str) -> bool:
    """Relaxed alignment: the signer is the From domain or a parent or child of it."""
    d, f = signing_domain.lower().rstrip("."), from_domain.lower().rstrip(".")
    return d == f or f.endswith("." + d) or d.endswith("." + f)


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
        if ok and aligned(signer, from_domain):
            return Verdict(True, f"DKIM pass, d={signer} aligned with From")
        reasons.append(f"d={signer}: {'pass but not aligned' if ok else 'fail'}")
    return Verdict(False, "DKIM " + "; ".join(reasons))


def from_authentication_results(message: InboundMessage, authserv_id: str) -> Verdict:
    """Trust only the Authentication-Results our own MTA added (its authserv-id), and only one."""
    ours = []
    for value in message.headers.get("authentication-results", []):
        try:
            parsed = authres.AuthenticationResultsHeader.parse_value(" ".join(value.split()))
        except Exception:
            continue
        if str(parsed.authserv_id).lower() == authserv_id.lower():
            ours.append(parsed)
    if not ours:
        return Verdict(False, f"no Authentication-Results from {authserv_id}")
    if len(ours) > 1:
        # Our MTA adds exactly one; a second with our id was forged upstream, and we cannot tell which.
        return Verdict(False, f"{len(ours)} Authentication-Results claim {authserv_id}")
    from_domain = domain_of(message.from_addr)
    for result in ours[0].results:
        props = {f"{p.type}.{p.name}": str(p.value) for p in result.properties}
        if result.method == "dmarc" and result.result == "pass":
            header_from = props.get("header.from", from_domain)
            if header_from.lower() == from_domain:
                return Verdict(True, f"DMARC pass for {from_domain} ({authserv_id})")
        if result.method == "dkim" and result.result == "pass":
            signer = props.get("header.d") or props.get("header.i", "").lstrip("@").partition("@")[2]
            if signer and aligned(signer, from_domain):
                return Verdict(True, f"DKIM pass d={signer} ({authserv_id})")
    return Verdict(False, f"no DMARC pass or aligned DKIM pass from {authserv_id}")


def authenticate(
    message: InboundMessage, source: str, authserv_id: str, verify_own_dkim: bool, lookup: TxtLookup
) -> Verdict:
    if message.from_count != 1 or not message.from_addr:
        return Verdict(False, "not exactly one From address")
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
