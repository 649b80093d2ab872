"""The config's JSON-schema check (``config/schema.yaml``) and the one-line errors every grid check raises."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dpmbench.errors import DpmbenchError, did_you_mean
from dpmbench.yamlfile import read_yaml

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SCHEMA = ROOT / "config" / "schema.yaml"


def key_name(path: Sequence[Any]) -> str:
    """The dotted config key of a JSON path (``models.gmm-2d.nfe[0]``)."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<config>"


def hint(value: Any, allowed: Any) -> str:
    """``"; did you mean 'x'?"`` for a misspelt name (``dpmbench.errors.did_you_mean``), else ``""``."""
    text = did_you_mean(value, allowed)
    return f"; {text}" if text else ""


def bad(key: str, what: str) -> DpmbenchError:
    """The one-line error of a bad config key."""
    return DpmbenchError(f"invalid config key {key!r}: {what}")


@functools.lru_cache(maxsize=8)
def _validator(path: str, mtime_ns: int) -> Any:
    """The JSON-schema validator of a schema file (parsed once per file version)."""
    import jsonschema

    return jsonschema.Draft202012Validator(read_yaml(path))


def check_schema(config: dict[str, Any], schema_path: str | os.PathLike[str] = DEFAULT_SCHEMA) -> None:
    """Validate ``config`` against the JSON schema; raise a one-line ``DpmbenchError`` naming the bad key."""
    import jsonschema

    validator = _validator(str(schema_path), Path(schema_path).stat().st_mtime_ns)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is None:
        return
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        key = key_name([*path, extra[0]]) if extra else key_name(path)
        raise bad(key, f"unknown key{hint(extra[0], allowed) if extra else ''} allowed: {', '.join(allowed)}")
    if error.validator == "required":
        raise bad(key_name(path), error.message)
    if len(path) >= 2 and path[-2] == "guidance":
        raise bad(key_name(path), f"{error.instance!r}; allowed: none or a number > 0")
    if error.validator in ("minimum", "exclusiveMinimum"):
        op = ">=" if error.validator == "minimum" else ">"
        raise bad(key_name(path), f"{error.instance!r}; allowed: a number {op} {error.validator_value}")
    raise bad(key_name(path), error.message.replace("\n", " "))
