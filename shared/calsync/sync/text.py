"""Event descriptions between the two sides: Google's HTML read as text, and Google's length limit.

Google Calendar keeps descriptions typed in its own editor as HTML (``<b>``, ``<br>``, ``<a href>``, lists,
entities); the bookings field is text. The import reads the HTML as text, and the content hash compares
both sides as text, so an HTML description round-trips without a write (the event keeps its HTML until a
person edits the booking's description in Directus; then the text goes to Google).

Google documents no limit for ``description``; 8,192 characters is the limit Google Calendar is reported to
enforce (and what the fake enforces), so a longer booking text is cut with a visible marker and the
booking's ``sync_error`` says so.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

DESCRIPTION_LIMIT = 8192
CUT_MARK = "\n… (cut: the whole text is in Directus)"
_TAG = re.compile(r"<\s*/?\s*(br|p|div|span|b|i|u|a|ul|ol|li|strong|em|h[1-6])\b[^>]*>", re.IGNORECASE)
_BREAKS = frozenset({"br", "p", "div", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6"})


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._href: str | None = None
        self._anchor: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "li":
            self.parts.append("\n• ")
        elif tag in _BREAKS:
            self.parts.append("\n")
        elif tag == "a":
            self._href = dict(attrs).get("href")
            self._anchor = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            text = "".join(self._anchor)
            self._anchor = []
            href, self._href = self._href, None
            self.parts.append(text if not href or href in text else f"{text} ({href})")
        elif tag in _BREAKS - {"li", "br"}:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        (self._anchor if self._href is not None else self.parts).append(data)


def is_html(text: str) -> bool:
    return bool(_TAG.search(text))


def as_text(description: str) -> str:
    """The description as people read it: HTML turned into lines, plain text as it is."""
    if not is_html(description):
        return description
    parser = _Text()
    parser.feed(description)
    parser.close()
    text = html.unescape("".join(parser.parts)).replace("\xa0", " ")
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def fit(description: str, room: int = DESCRIPTION_LIMIT) -> tuple[str, bool]:
    """(the description cut to ``room`` characters with a marker if it is longer, whether it was cut)."""
    if len(description) <= room:
        return description, False
    return description[: max(0, room - len(CUT_MARK))].rstrip() + CUT_MARK, True
