"""Text from bytes under a charset label that may be wrong: valid UTF-8 first, then a bounded guess."""

from __future__ import annotations

import codecs

from charset_normalizer import from_bytes

# Labels whose real repertoire is wider than the name says, read as the superset the senders use.
_SUPERSETS = {"gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "euc-cn": "gb18030"}
_ISO2022JP = ("iso2022_jp", "iso2022_jp_ext", "iso2022_jp_2")
# What Norwegian mail is really in when the label is wrong or missing; the detector chooses among these only.
_PLAUSIBLE = ["utf_8", "cp1252", "latin_1", "iso8859_15"]
_UTF8_NAMES = ("utf_8",)
# Longer text gives the detector nothing new and costs time: a bounded sample decides.
_SAMPLE = 64 * 1024


def _codec(label: str | None) -> str | None:
    if not label:
        return None
    try:
        return codecs.lookup(_SUPERSETS.get(label.lower(), label)).name.replace("-", "_")
    except LookupError:
        return None


def decode(data: bytes, label: str | None) -> tuple[str, str | None]:
    """The text of data and, when the label did not fit the bytes, a defect that says what was done."""
    if data.isascii():
        # 7-bit data is ASCII whatever the label, except for the escape-sequence charsets.
        codec = _codec(label)
        if codec and codec.startswith("iso2022_jp"):
            return _iso2022jp(data)
        if codec and codec.startswith(("utf_7", "utf_16", "utf_32")):
            return _labelled(data, codec, label)
        return data.decode("ascii"), None
    codec = _codec(label)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        return text, None if codec in _UTF8_NAMES else f"CharsetMismatch: {label or 'none'} read as utf-8"
    if codec and codec.startswith(("utf_16", "utf_32")):
        return _labelled(data, codec, label)
    if codec and codec not in _UTF8_NAMES and codec != "ascii":
        return _labelled(data, codec, label)
    return _guess(data, label, codec)


def _iso2022jp(data: bytes) -> tuple[str, str | None]:
    for codec in _ISO2022JP:
        try:
            return data.decode(codec), None
        except UnicodeDecodeError:
            continue
    return data.decode("iso2022_jp_2", "replace"), "CharsetMismatch: iso-2022-jp with invalid sequences"


def _labelled(data: bytes, codec: str, label: str | None) -> tuple[str, str | None]:
    """Bytes under a label that is not UTF-8: the label, unless the bytes disprove it."""
    if codec in ("latin_1", "iso8859_1") and any(0x80 <= b <= 0x9F for b in data):
        # C1 controls never appear in written text: these are cp1252 quotes and dashes.
        return data.decode("cp1252", "replace"), f"CharsetMismatch: {label} read as cp1252"
    if label and label.lower() in _SUPERSETS:
        try:
            return data.decode(codecs.lookup(label).name), None
        except (UnicodeDecodeError, LookupError):
            return data.decode(codec, "replace"), f"CharsetMismatch: {label} read as {codec}"
    try:
        return data.decode(codec), None
    except UnicodeDecodeError:
        return _guess(data, label, codec)


def _guess(data: bytes, label: str | None, codec: str | None) -> tuple[str, str | None]:
    candidates = list(_PLAUSIBLE)
    if codec and codec not in candidates and codec != "ascii":
        candidates.append(codec)
    best = from_bytes(data[:_SAMPLE], cp_isolation=candidates).best()
    chosen = best.encoding if best is not None else "cp1252"
    return data.decode(chosen, "replace"), f"CharsetMismatch: {label or 'none'} read as {chosen}"
