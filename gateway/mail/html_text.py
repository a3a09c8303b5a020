"""HTML to the text a person sees, by inscriptis (lxml underneath: linear, never a regex over markup)."""

from __future__ import annotations

import html
import re

from inscriptis import get_text
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.model.config import ParserConfig

# lxml refuses str input that still declares a byte encoding; the declaration says nothing once decoded.
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]{0,200}>")
_BLANK_RUNS = re.compile(r"\n[ \t]*(?:\n[ \t]*){2,}")
# Only for pages lxml cannot read (nesting past its depth limit): tags out, text kept; linear.
_ANY_TAG = re.compile(r"<[^<>]*>")
_CONFIG = ParserConfig(css=CSS_PROFILES["strict"], display_images=False, display_links=False)


def html_to_text(markup: str) -> str:
    """Visible text of an HTML body: blocks, cells and list items apart; title, style and script left out."""
    markup = _XML_DECLARATION.sub("", markup, count=1)
    if not markup.strip():
        return ""
    try:
        text = get_text(markup, _CONFIG)
    except (ValueError, TypeError, AttributeError):  # lxml gives up on some fragments; nothing to read then
        text = ""
    if not text.strip():
        text = html.unescape(_ANY_TAG.sub(" ", markup))
    lines = [line.rstrip() for line in text.replace("\xa0", " ").splitlines()]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()
