"""File names and other outside text, made safe for one-line logs and error messages.

A file may be named "a.png\nINFO colorization.acquire: acquire: 0 rejected": printed
as is, the name forges a log line. `escaped` writes every non-printable character
(newlines, carriage returns, escape sequences, bidi overrides) as its Python escape and
leaves the rest alone, so Japanese or accented names stay readable.
"""

from __future__ import annotations

import os


def escaped(text: object) -> str:
    """`str(text)` with every non-printable character written as its escape (\\n, \\x1b, \\u202e)."""
    s = os.fsdecode(text) if isinstance(text, bytes | os.PathLike) else str(text)
    if s.isprintable():
        return s
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in s)
