"""Text from input files made safe to show: on a terminal, in Markdown, in HTML, in a log.

Everything the reports show that came from a results file, a manifest, a command-line value
or a file name (labels, messages, exception text, paths) goes through :func:`visible` first:

* control characters (C0, DEL, C1: so ESC and with it every ANSI / terminal escape sequence,
  CSI, OSC), line and paragraph separators, bidirectional overrides and isolates, and the
  other invisible format characters are replaced by their escape as text (``\\x1b``,
  ``\\u202e``); so are newlines, carriage returns and tabs in one-line fields (``\\n``), so
  that no input can start a report line of its own, recolour the terminal, reorder what
  follows or hide text;
* lone surrogates, which is how Python holds the bytes of a file name that are not UTF-8
  (``surrogateescape``), become ``\\xNN`` of the original byte (``\\udXXX`` for others), so
  that the text encodes under strict UTF-8.

:func:`md_inline` adds Markdown: ``&``, backslash and every character that starts markup,
a link, an autolink, HTML or a table cell boundary is escaped, so that input text stays one
cell of one row. The HTML renderer escapes :func:`visible` text with :func:`html.escape`.
"""

from __future__ import annotations

import re

__all__ = ["bounded", "md_inline", "shortened", "visible"]

#: The characters of the Unicode categories Cc, Cf, Cs, Zl and Zp (Unicode 14) from DEL on,
#: as ranges (C0 controls are added below).
_OTHER_UNSAFE = (
    "\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e"
    "\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ud800-\udfff\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U00013438\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f"
)
_UNSAFE = re.compile(f"[\x00-\x1f{_OTHER_UNSAFE}]")
#: The same, less newline and tab (kept in multi-line text).
_UNSAFE_BLOCK = re.compile(f"[\x00-\x08\x0b-\x1f{_OTHER_UNSAFE}]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    ch = match.group()
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def visible(value: object, *, newlines: bool = False, limit: int | None = None) -> str:
    """``value`` as text with every character that could hide, reorder or forge output
    replaced by its escape (see the module docstring).

    ``newlines``: keep newlines and tabs (multi-line text shown as a block). ``limit``: cut
    text longer than that many characters (before escaping) and say how long it was.
    """
    text = value if isinstance(value, str) else str(value)
    if limit is not None and len(text) > limit:
        text = bounded(text, limit)
    pattern = _UNSAFE_BLOCK if newlines else _UNSAFE
    if pattern.search(text) is None:  # the common case: nothing to do
        return text
    return pattern.sub(_escape_char, text)


def bounded(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters, saying how long it was."""
    if len(text) <= limit:
        return text
    suffix = f"...({len(text)} chars)"
    return text[: max(limit - len(suffix), 8)] + suffix


def shortened(text: str, limit: int) -> str:
    """``text``, or its first ``limit - 3`` characters and ``...`` when it is longer."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: Markdown: backslash, emphasis, code, links and images (``![`` needs its ``[``), HTML and
#: autolinks, table cells, headings, strikethrough, math, mentions and issue references
#: (``_`` apart: see :func:`_underscores`).
_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|~#$@])")
_UNDERSCORES = re.compile(r"_+")
#: GitHub's bare autolinks (``https://...``, ``www.``): the ``:`` / ``.`` that starts one.
_MD_AUTOLINK = re.compile(r"(?i)(?<=[a-z])(:)(?=//)|(?<=\bwww)(\.)")
#: Text that would start a block (list item, ordered list, setext underline) after ``- ``.
_MD_BLOCK_START = re.compile(r"^([+\-=])|^(\d+)([.)])")


def _underscores(match: re.Match[str]) -> str:
    """A run of ``_`` escaped, unless letters or digits stand on both sides (``gguf-q4_0``,
    ``test_name``): there it can neither open nor close emphasis."""
    text, start, end = match.string, match.start(), match.end()
    if 0 < start and end < len(text) and text[start - 1].isalnum() and text[end].isalnum():
        return match.group()
    return "\\_" * (end - start)


def md_inline(value: object, *, limit: int | None = None) -> str:
    """Text from an input made inert in Markdown: one line (:func:`visible`), ``&`` as
    ``&amp;``, every character that starts markup backslash-escaped, no bare autolink.
    Safe in a table cell, a list item and a heading."""
    text = visible(value, limit=limit).replace("&", "&amp;")
    text = _MD_SPECIAL.sub(r"\\\1", text)
    if "_" in text:
        text = _UNDERSCORES.sub(_underscores, text)
    text = _MD_AUTOLINK.sub(lambda m: "\\" + m.group(), text)
    return _MD_BLOCK_START.sub(
        lambda m: "\\" + m[1] if m[1] else m[2] + "\\" + m[3], text, count=1
    )
