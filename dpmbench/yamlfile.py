"""Reading YAML with libyaml's parser when PyYAML was built with it (same documents and values as
``yaml.safe_load``, several times faster: the papers files and configs are parsed on every ``dpmbench list papers``
and report)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load(text)`` through libyaml when available (raises ``yaml.YAMLError`` like it)."""
    return yaml.load(text, Loader=SafeLoader)  # noqa: S506  (a safe loader: SafeConstructor)


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """The YAML document of a file."""
    return load_yaml(Path(path).read_text())
