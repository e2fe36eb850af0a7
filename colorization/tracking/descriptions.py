"""What the registry page tells a person browsing it: descriptions and tags, built from the facts."""

from __future__ import annotations

import json
from typing import Any

from colorization.models.specs import HINT_KIND, SPECS
from colorization.tracking import flatten

HIST = "a 512-bin colour histogram (8 levels per channel, sums to 1)"


def model_tags(kind: str, config: dict[str, Any], data_source: str | None) -> dict[str, str]:
    size, hinter, generator = int(config["image_size"]), SPECS[HINT_KIND].registered, SPECS[kind].generator
    return {
        "task": SPECS[kind].task,
        "image_size": str(size),
        "data_source": data_source or "unknown",
        "input": f"line art {size}x{size}" + (" + colour hint [512]" if generator else ""),
        "output": f"RGB {size}x{size}" if generator else "colour hint [512]",
        "hint": f"palette, reference picture or {hinter}" if generator else "none (it makes the hint)",
    }


def model_description(name: str, kind: str, config: dict[str, Any], data_source: str | None) -> str:
    spec, size = SPECS[kind], int(config["image_size"])
    source = f" Trained on {data_source} pictures." if data_source else ""
    served = f'Served (`mlflow models serve`): {{"inputs": {{"lineart": [N, {size}, {size}] 0..255'
    lineart = f"Input: a {size} x {size} line art (0 = line, 255 = paper)"
    if not spec.generator:
        io = f"{lineart}. Output: {HIST}. {served}}}}} -> [N, 512]."
        users = " and ".join(s.registered for s in SPECS.values() if s.generator)
        hint = f"Takes no hint: it makes one, for {users}."
        use = f"Used by `colorization colorize --hint-model models:/{name}@champion` and the studio."
    else:
        io = (
            f"{lineart} and a colour hint. Output: an RGB picture, {size} x {size}. "
            f'{served}, "hint": [N, 512]}}}} -> RGB [N, {size}, {size}, 3], 0..255.'
        )
        hint = (
            f"Hint: {HIST}, from a palette ('#rrggbb:weight,...', .gpl or .json), a reference picture's "
            f"colours, or {SPECS[HINT_KIND].registered}'s guess."
        )
        if config["arch"].get("local_hints"):
            hint += (
                f" Local hints too (optional): colour dots, strokes or a hint layer "
                f"(`colorize --hints`, the studio's brush); served as "
                f'{{"params": {{"local": [N x 4 x {size} x {size} floats]}}}}: '
                "RGB in -1..1 where a hint is, then a mask."
            )
        use = (
            "Any size with the lines kept, and layers: "
            f"`colorization colorize --model models:/{name}@champion` or `colorization studio`."
        )
    return f"{spec.what}{source}\n\n{io}\n\n{hint}\n\n{use}"


def _json(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def changes(new: dict[str, str], old: dict[str, str], limit: int = 8) -> list[str]:
    """What differs between two versions' tags: commit, data, params, architecture."""
    found = []
    for tag, what in (("git_commit", "code: commit"), ("data_md5", "data: md5")):
        if new.get(tag) != old.get(tag):
            found.append(f"{what} {old.get(tag, '?')[:12]} -> {new.get(tag, '?')[:12]}")
    for tag, what in (("params", "params"), ("config", "architecture")):
        a, b = flatten(_json(old.get(tag))), flatten(_json(new.get(tag)))
        diffs = [
            f"{k} {a.get(k, '-')} -> {b.get(k, '-')}"
            for k in sorted(a.keys() | b.keys())
            if a.get(k) != b.get(k)
        ]
        if diffs:
            more = f" (+{len(diffs) - limit} more)" if len(diffs) > limit else ""
            found.append(f"{what}: " + ", ".join(diffs[:limit]) + more)
    return found


def version_description(
    kind: str, tags: dict[str, str], base: tuple[str, dict[str, str]] | None, promoted: bool, reason: str
) -> str:
    """A version's description: what changed against `base` (the champion it challenged), scores, decision."""
    commit = tags.get("git_commit", "unknown")
    dirty = " (with uncommitted changes)" if commit.endswith("-dirty") else ""
    data, run = tags.get("data_md5", "unknown")[:12], tags.get("source_run_id")
    lines = [f"{kind} model trained at commit {commit[:12]}{dirty}, data md5 {data}, run {run}."]
    if base is None:
        lines.append("What changed: the first version of this model.")
    else:
        version, old = base
        found = "; ".join(changes(tags, old)) or "nothing in code, data, params or architecture (a retrain)."
        lines.append(f"What changed against champion v{version}: {found}")
    scores = {k.removeprefix("metric."): v for k, v in tags.items() if k.startswith("metric.")}
    if scores:
        split = tags.get("eval_split_name", "test")
        shown = ", ".join(f"{k} {float(v):.4g}" for k, v in sorted(scores.items()))
        lines.append(f"Scores on the {split} split ({tags.get('eval_split', '?')}): {shown}.")
    decision = "Promoted to champion" if promoted else "Not promoted (stays challenger)"
    why = reason.removeprefix("not promoted: ").removeprefix("promoted: ")
    lines.append(f"{decision}. Why: {why} (rule: {tags.get('promotion_metric', '?')}).")
    return "\n\n".join(lines)


def describe_model(client, name: str, kind: str, config: dict[str, Any], data_source: str | None) -> None:
    """Set the registered model's description and tags (again on each registration: they follow the code)."""
    client.update_registered_model(name, description=model_description(name, kind, config, data_source))
    for key, value in model_tags(kind, config, data_source).items():
        client.set_registered_model_tag(name, key, value)
