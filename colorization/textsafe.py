"""Outside text (file names) made safe for one-line logs: a name holding a newline would forge a log
line. Only non-printable characters are escaped, so Japanese or accented names stay readable."""

from __future__ import annotations

import os


def escaped(text: object) -> str:
    """`str(text)` with every non-printable character written as its escape (\\n, \\x1b, \\u202e)."""
    s = os.fsdecode(text) if isinstance(text, bytes | os.PathLike) else str(text)
    if s.isprintable():  # nearly every name: no per-character work
        return s
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in s)
