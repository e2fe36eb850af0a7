"""The README and docs/ stay true to the tree: every relative link lands, every module is mapped.

A module added, moved or removed without its line in the README's map, or a docs page
renamed under a link, fails here instead of leaving a reader at a dead end.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def outside_code(text: str) -> str:
    """The text with fenced code blocks and inline code removed (links there are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    return {anchor(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(outside_code(page.read_text())):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists() or (fragment and fragment not in anchors(dest)):
            broken.append(f"{page.relative_to(ROOT)}: {target}")
    return broken


def test_every_relative_link_and_anchor_resolves():
    assert len(PAGES) > 1, "docs/*.md not found"
    assert [b for page in PAGES for b in broken_links(page)] == []


def code_map() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("## Map of the code", 1)[1].split("\n## ", 1)[0]


def named_in_map(module: Path) -> str:
    """How the map names a module: relative to `colorization/`, or to the repo for flows/tasks."""
    rel = module.relative_to(ROOT)
    return str(rel.relative_to("colorization") if rel.parts[0] == "colorization" else rel)


def test_the_code_map_lists_every_module_and_only_those():
    modules = [p for top in ("colorization", "flows", "tasks") for p in (ROOT / top).rglob("*.py")]
    expected = {named_in_map(p) for p in modules}
    listed = set(re.findall(r"`([\w/]+\.py)`", code_map()))
    assert sorted(expected - listed) == [], "modules missing from the README's map of the code"
    assert sorted(listed - expected) == [], "the README's map names modules that do not exist"
