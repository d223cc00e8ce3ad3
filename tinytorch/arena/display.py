"""How a string from a run file is shown on the board: every one of them may be hostile.

A submission chooses its backend name, distribution, version and entry point,
and the texts of the exceptions it raises; a run file itself can be edited.
So every string goes through `name`, `token` or `text` here (one line, no control or
invisible characters, cut to a sane length), then through the escaping of
where it lands: `markdown` for README.md, jinja2's autoescape for index.html,
`chart` for matplotlib. A name outside the registry's `[a-z][a-z0-9_-]*` is
never shown raw: it is shown as Python's ascii() of it (quoted, with \\u
escapes), so a look-alike of `optimized` cannot pass for it.
"""
from __future__ import annotations

import hashlib
import re
import string
import unicodedata

NAME = re.compile(r"[a-z][a-z0-9_-]*")
NAME_LIMIT = 40          # characters of a name, as shown
TEXT_LIMIT = 400         # characters of a reason or other free text, as shown
NEWLINE = " \u23ce "     # a line break inside a text, shown as a return symbol
#: categories shown as escapes: controls, bidi and other format characters, separators,
#: private-use, surrogates and unassigned code points.
_INVISIBLE = {"Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"}
#: what can start inline Markdown in a line of text (GitHub's, with its math and tables);
#: block syntax cannot start: every shown text sits inside a line the template began.
_MARKDOWN_SPECIAL = set("\\`*_[]<>!|~$&#^")
_WORD_JOINER = "\u2060"


def conforming(name: str) -> bool:
    """Whether `name` is a registry name short enough to show as it is."""
    return bool(NAME.fullmatch(name)) and len(name) <= NAME_LIMIT


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def name(raw: str) -> str:
    """A backend name as the board shows it: itself if it conforms, else ascii() of it, cut."""
    return raw if conforming(raw) else cut(ascii(raw), NAME_LIMIT)


_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+!:/-]*")


def token(raw, limit: int = 2 * NAME_LIMIT) -> str:
    """A distribution, version, entry point or install path: itself if plain ASCII (as
    packaging makes them), else ascii() of it, cut: a look-alike package name is no more
    shown raw than a look-alike backend name."""
    raw = "" if raw is None else str(raw)
    return raw if _TOKEN.fullmatch(raw) and len(raw) <= limit else cut(ascii(raw), limit)


def anchor(raw: str) -> str:
    """The page anchor of a backend: its name if it conforms, else `_` and a hash of it
    (a registry name starts with a letter, so the two never meet, nor meet the page's own
    ids, which start with `_` and are not hex)."""
    return raw if conforming(raw) else "_" + hashlib.sha256(raw.encode("utf-8", "replace")
                                                            ).hexdigest()[:16]


def text(raw, limit: int = TEXT_LIMIT) -> str:
    """Any value as one line of visible text: line breaks as a return symbol, other
    invisible characters as escapes, cut to `limit`."""
    raw = "" if raw is None else str(raw)
    raw = re.sub(r"\r\n|[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]", NEWLINE, raw).replace("\t", " ")
    shown = "".join(ascii(ch)[1:-1] if unicodedata.category(ch) in _INVISIBLE else ch
                    for ch in raw)
    return cut(shown, limit)


def markdown(shown: str) -> str:
    """Text made safe for Markdown (GitHub's): every character that could start inline
    syntax is backslash-escaped, and so is the dot of `www.`. GitHub links e-mail
    addresses, @mentions, :emoji: and URLs even when escaped, so instead an invisible word
    joiner follows an `@` or `:` that a name or a `/` follows (`https:⁠//`, `a@⁠b`)."""
    out = []
    for i, ch in enumerate(shown):
        after = shown[i + 1:i + 2]
        if ch in _MARKDOWN_SPECIAL or ch == "." and shown[max(0, i - 3):i].lower() == "www":
            out.append("\\" + ch)
        else:
            out.append(ch)
        if ch in "@:" and (after.isalnum() or after in ("_", "+", "-", "/")):
            out.append(_WORD_JOINER)
    return "".join(out)


def chart(shown: str) -> str:
    """Text made safe for matplotlib, which would parse `$...$` as mathtext (and raise)."""
    return shown.replace("$", r"\$")
