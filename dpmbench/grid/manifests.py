"""Which checkpoint ids a config may name, and what the grid knows of each without loading it.

One manifest format (``checkpoints: {id: entry}``, the format of ``config/checkpoints.yaml``) and one precedence
rule: the files are read in this order and an entry replaces the whole entry of the same id read before it —

1. ``config/checkpoints.yaml`` (then the files of ``$DPMBENCH_MANIFESTS``, os.pathsep-separated);
2. the files of the config's ``checkpoints_manifest`` (a path or a list, relative to the repository root), in order;
3. the config's own ``checkpoints:`` section.

An entry with an ``adapter`` and ``files`` is loadable (pulled, sha256-verified, loaded: ``dpmbench.models.manifest``);
an entry with neither is *named only* — the checkpoint a paper used, described (source, schedule, parameterization,
conditioning) but not pinned: a config may name it, and its jobs stop at the pull with one line saying what to add.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dpmbench.grid.schema import ROOT, bad
from dpmbench.yamlfile import read_yaml


def manifest_files(config: dict[str, Any]) -> list[tuple[str, Path]]:
    """The config's ``checkpoints_manifest`` files as (config key, path); a file that does not exist is an error."""
    listed = config.get("checkpoints_manifest", [])
    out = []
    for i, name in enumerate([listed] if isinstance(listed, str) else listed):
        path = Path(name) if Path(name).is_absolute() else ROOT / name
        key = "checkpoints_manifest" if isinstance(listed, str) else f"checkpoints_manifest[{i}]"
        if not path.is_file():
            raise bad(key, f"no manifest file {str(name)!r}")
        out.append((key, path))
    return out


def is_named_only(entry: Any) -> bool:
    """Whether a raw manifest entry only names a checkpoint (no adapter, no files: nothing to pull or load)."""
    return isinstance(entry, dict) and "adapter" not in entry and "files" not in entry


def _entries(key: str, path: Path) -> dict[str, Any]:
    try:
        doc = read_yaml(path)
    except yaml.YAMLError as exc:
        raise bad(key, f"{str(path)!r} is not valid YAML ({str(exc).splitlines()[0]})") from None
    section = doc.get("checkpoints") if isinstance(doc, dict) else None
    if not isinstance(section, dict):
        raise bad(key, f"{str(path)!r} has no top-level 'checkpoints:' mapping (id -> entry)")
    return {str(k): (v if isinstance(v, dict) else {}) for k, v in section.items()}


def load_manifests(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every checkpoint id the config may name, id -> raw entry, in the precedence order of this module."""
    out: dict[str, dict[str, Any]] = {}
    default = ROOT / "config" / "checkpoints.yaml"
    if default.is_file():
        out.update(_entries("config/checkpoints.yaml", default))
    for key, path in manifest_files(config):
        out.update(_entries(key, path))
    out.update({str(k): v for k, v in (config.get("checkpoints") or {}).items()})
    return out


def checkpoint_manifest(config: dict[str, Any]) -> dict[str, Any]:
    """The loadable checkpoint entries of a config (``dpmbench.models.manifest.CheckpointEntry``), in the precedence
    order of this module; one-line errors naming ``checkpoints.<id>.<field>``."""
    from dpmbench.models.manifest import load_manifest, parse_manifest

    manifest = load_manifest()
    for _, path in manifest_files(config):
        manifest.update(load_manifest(path))
    manifest.update(parse_manifest(config.get("checkpoints") or {}, "the config's checkpoints section"))
    return manifest


def entry_conditional(entry: Any) -> bool:
    """Whether a loadable checkpoint entry (``dpmbench.models.manifest.CheckpointEntry``) takes conditioning."""
    return bool(entry.num_classes or entry.conditioning != "none")


def manifest_conditional(entry: dict[str, Any]) -> bool | None:
    """Whether a named-only model takes conditioning (so that guidance applies); None when the entry does not say."""
    if "num_classes" in entry:
        return bool(entry["num_classes"])
    cond = entry.get("conditioning")
    if cond is None:
        return None
    return str(cond).lower() not in ("none", "unconditional", "false")
