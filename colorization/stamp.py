"""The project's mark in the images `colorize` writes, so `colorize -o` replaces only a file bearing it:
metadata viewers ignore, a PNG tEXt chunk (Software), a JPEG COM comment or a WebP XMP chunk (CreatorTool)."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from colorization.images import header_size, sniff_format

STAMP = b"lineart-colorization output"
_LOOK = 512  # the mark lies within this many bytes of the start (PNG, JPEG) or the end (WebP)
_XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:CreatorTool="' + STAMP + b'"/>'
    b"</rdf:RDF></x:xmpmeta>"
)
_TEXT = b"tEXt" + b"Software\0" + STAMP
_PNG_TEXT = struct.pack(">I", len(_TEXT) - 4) + _TEXT + struct.pack(">I", zlib.crc32(_TEXT))  # the chunk


def _riff_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + b"\0" * (len(body) % 2)


def stamp_image(data: bytes) -> bytes:
    """PNG, JPEG or WebP bytes with the project's mark added; the pixels are unchanged."""
    fmt = sniff_format(data)
    if fmt == "png" and data[12:16] == b"IHDR":
        return data[:33] + _PNG_TEXT + data[33:]
    if fmt == "jpeg":
        at = 2 + (2 + int.from_bytes(data[4:6], "big") if data[2:4] == b"\xff\xe0" else 0)  # after JFIF
        return data[:at] + b"\xff\xfe" + struct.pack(">H", len(STAMP) + 2) + STAMP + data[at:]
    if fmt == "webp":
        # Metadata needs the extended format: a VP8X header (XMP flag set) before the image chunk.
        width, height = header_size(data, "webp") or (0, 0)
        if data[12:16] not in (b"VP8 ", b"VP8L") or not width:
            raise ValueError("cannot mark this WebP file")
        canvas = struct.pack("<I", width - 1)[:3] + struct.pack("<I", height - 1)[:3]
        body = _riff_chunk(b"VP8X", b"\x04\0\0\0" + canvas) + data[12:] + _riff_chunk(b"XMP ", _XMP)
        return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body
    raise ValueError(f"cannot mark {fmt or 'unknown'} data")


def bears_stamp(path: str | os.PathLike) -> bool:
    """`path` is a plain file the project wrote with `stamp_image` (False for folders, links, others)."""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return False
    with open(path, "rb") as fh:
        head = fh.read(_LOOK)
        fh.seek(max(0, fh.seek(0, os.SEEK_END) - _LOOK))
        tail = fh.read()
    return STAMP in head or STAMP in tail
