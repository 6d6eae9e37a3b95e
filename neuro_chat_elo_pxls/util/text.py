"""Text that came from pxls.space, made safe for logs, terminals and JSON lines.

Names are validated, but canvas codes, Discord names, faction tags and error text
are free text: a newline could forge a log line, an ANSI escape could drive the
operator's terminal, a bidi override could hide what follows. :func:`shown` escapes
them; :func:`json_safe` escapes the line separators JSON leaves raw.
"""

from __future__ import annotations

import unicodedata

#: characters JSON allows raw but line-splitting readers (str.splitlines) break on
_JSON_LINE_BREAKS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\u0085": "\\u0085"}


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(text: str) -> str:
    """``text`` with control, format (bidi overrides, zero-width) and separator
    characters escaped as ``\\xNN``/``\\uNNNN``; everything else unchanged."""
    if text.isprintable():
        return text  # the common case (isprintable is False for all of those)
    return "".join(
        _escape(char) if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") else char
        for char in text
    )


def json_safe(line: str) -> str:
    """A JSON text with U+2028, U+2029 and U+0085 escaped (still the same JSON value)."""
    for raw, escaped in _JSON_LINE_BREAKS.items():
        if raw in line:
            line = line.replace(raw, escaped)
    return line
