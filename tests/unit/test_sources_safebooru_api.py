"""colorization.sources.safebooru_api: post metadata filters and parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from colorization.config import load_params
from colorization.sources.polite_http import HostAllowList
from colorization.sources.safebooru_api import excluded_tags, parse_post, skip_reason

REPO = Path(__file__).resolve().parents[2]


def test_metadata_filters():
    post = parse_post(
        {
            "id": "9",
            "directory": "1",
            "image": "a.PNG",
            "hash": "AB",
            "width": 600,
            "height": 800,
            "tags": "1girl Monochrome",
            "rating": "general",
            "score": None,
        },
        "https://safebooru.org",
    )
    assert (
        post.file_url == "https://safebooru.org/images/1/a.PNG" and post.ext == "png" and post.score is None
    )
    allow = HostAllowList("https://safebooru.org", [])
    excluded = excluded_tags("-monochrome -greyscale id:<5 1girl")
    assert excluded == {"monochrome", "greyscale"}
    assert skip_reason(post, min_size=512, excluded=excluded, allow=allow) == "excluded tag: monochrome"
    assert (
        skip_reason(post, min_size=700, excluded=frozenset(), allow=allow)
        == "too small: 600x800 < min_size 700"
    )
    default_tags = load_params(REPO / "params.yaml").acquire.safebooru.tags
    assert {"monochrome", "greyscale", "comic"} <= excluded_tags(default_tags)


def test_protocol_relative_file_url_and_unsafe_names():
    base = "https://safebooru.org"
    post = parse_post({"id": 1, "file_url": "//safebooru.org//images/1/a.jpg"}, base)
    assert post.file_url == "https://safebooru.org//images/1/a.jpg"
    with pytest.raises(ValueError, match="malformed post"):
        parse_post({"id": 2, "directory": "../..", "image": "x.jpg"}, base)
    with pytest.raises(ValueError, match="bad id"):
        parse_post({"id": "x"}, base)
