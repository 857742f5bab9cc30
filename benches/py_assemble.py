"""A straightforward pure-Python version of `pinrel.assemble` with the default field rules.

It is the baseline of `bench_assemble.py` and doubles as an independent cross-check of the Rust
rules: same steps in the same order (markup, entities, invisible characters, NFKC, whitespace, list
de-duplication, labels, budget allocation, grapheme-safe truncation), written the obvious way with
the standard library and the `regex` module rather than hand-written scanners.

Known, deliberate differences: entities are decoded by `html.unescape` (every HTML5 name, and
legacy names without a semicolon), where pinrel decodes the names that occur in catalog text; the
`lang` pseudo-field is not supported.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import regex

FIELDS = ("title", "description", "captions", "boards", "queries", "link_title", "link_description")
LIST_FIELDS = frozenset({"captions", "boards", "queries"})
LABELS = {
    "title": "title: ",
    "description": "description: ",
    "captions": "captions: ",
    "boards": "boards: ",
    "queries": "queries: ",
    "link_title": "link title: ",
    "link_description": "link description: ",
}
CAPS = {
    "title": 200,
    "description": 600,
    "captions": 300,
    "boards": 200,
    "queries": 200,
    "link_title": 150,
    "link_description": 300,
}
SEPARATOR = " | "
LIST_SEPARATOR = "; "

# Script and style bodies go with their tags (to the end of the text when never closed); a `<` starts
# markup only when a letter, `/`, `!` or `?` follows and a `>` closes it.
MARKUP = re.compile(
    r"<(script|style)(?=[\s>/])[^>]*>.*?(?:</\1[^>]*(?:>|\Z)|\Z)|<!--.*?-->|<[A-Za-z/!?][^>]*>",
    re.DOTALL | re.IGNORECASE,
)
# Invisible format characters that carry no content (ZWJ and ZWNJ are kept: scripts need them).
JUNK_FORMAT = frozenset(
    "\u00ad\u061c\u200b\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064"
    "\u2066\u2067\u2068\u2069\u206a\u206b\u206c\u206d\u206e\u206f\ufeff\ufff9\ufffa\ufffb\U000e0001"
)
GRAPHEME = regex.compile(r"\X")


def clean_text(text: str) -> str:
    text = MARKUP.sub(" ", text) if "<" in text else text
    text = html.unescape(text) if "&" in text else text
    if not text.isascii():
        text = "".join(
            c for c in text if c.isspace() or (unicodedata.category(c) != "Cc" and c not in JUNK_FORMAT)
        )
        text = unicodedata.normalize("NFKC", text)
    else:
        text = "".join(c for c in text if c.isspace() or c.isprintable())
    return " ".join(text.split())


def truncate(text: str, max_chars: int) -> str:
    """Longest prefix of whole grapheme clusters within `max_chars`, trailing whitespace dropped."""
    if len(text) <= max_chars:
        clusters = None
        cut = text
    else:
        clusters = []
        used = 0
        for m in GRAPHEME.finditer(text):
            if m.end() > max_chars:
                break
            clusters.append(m.group())
            used = m.end()
        cut = text[:used]
    if cut and cut[-1].isspace():
        clusters = clusters if clusters is not None else GRAPHEME.findall(cut)
        while clusters and clusters[-1].isspace():
            clusters.pop()
        cut = "".join(clusters)
    return cut


@dataclass
class Part:
    label: str
    content: str
    want: int
    gaps: list[tuple[int, int]] = field(default_factory=list)

    def truncated(self, allot: int) -> str:
        cut = truncate(self.content, allot)
        if len(cut) == len(self.content):
            return cut
        for entry_end, next_start in self.gaps:
            # A cut inside a list separator falls back to the end of the entry before it.
            if entry_end < len(cut) <= next_start:
                boundaries = {m.end() for m in GRAPHEME.finditer(self.content)}
                if entry_end in boundaries:
                    return truncate(self.content[:entry_end], allot)
                break
        return cut


def clean_list(entries: list[str]) -> tuple[str, list[tuple[int, int]]]:
    seen: set[str] = set()
    joined = ""
    gaps = []
    for entry in entries:
        cleaned = clean_text(entry)
        if not cleaned or cleaned.lower() in seen:
            continue
        seen.add(cleaned.lower())
        if joined:
            gaps.append((len(joined), len(joined) + len(LIST_SEPARATOR)))
            joined += LIST_SEPARATOR
        joined += cleaned
    return joined, gaps


def water_fill(wants: list[int], budget: int) -> list[int]:
    """Everyone gets min(want, level) at the highest level that fits; rounding leftovers go first-come."""
    if sum(wants) <= budget:
        return list(wants)
    lo, hi = 0, max(wants)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if sum(min(w, mid) for w in wants) <= budget:
            lo = mid
        else:
            hi = mid
    left = budget - sum(min(w, lo) for w in wants)
    out = []
    for w in wants:
        a = min(w, lo)
        if w > lo and left > 0:
            a += 1
            left -= 1
        out.append(a)
    return out


def assemble_one(item: dict[str, Any], max_chars: int = 1024) -> str:
    parts: list[Part] = []
    for f in FIELDS:
        value = item.get(f)
        if f in LIST_FIELDS:
            entries = [value] if isinstance(value, str) else [e for e in value or [] if e is not None]
            content, gaps = clean_list(entries)
        else:
            content, gaps = (clean_text(value) if value else ""), []
        if content:
            parts.append(Part(LABELS[f], content, min(len(content), CAPS[f]), gaps))

    def seps(n: int) -> int:
        return max(n - 1, 0) * len(SEPARATOR)

    while True:
        # Every part needs its label plus one char; drop the last fields until that fits.
        while parts and sum(len(p.label) + 1 for p in parts) + seps(len(parts)) > max_chars:
            parts.pop()
        overhead = sum(len(p.label) for p in parts) + seps(len(parts))
        allots = water_fill([p.want for p in parts], max(max_chars - overhead, 0))
        texts = [p.truncated(a) for p, a in zip(parts, allots, strict=True)]
        if not all(texts):
            parts = [p for p, t in zip(parts, texts, strict=True) if t]
            continue
        return SEPARATOR.join(p.label + t for p, t in zip(parts, texts, strict=True))


def assemble(items: list[dict[str, Any]], max_chars: int = 1024) -> list[str]:
    return [assemble_one(item, max_chars) for item in items]
