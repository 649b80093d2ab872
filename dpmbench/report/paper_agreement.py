"""Reported vs reproduced: the one rule that says whether a value of ours agrees with the numbers published for its
setting, and the known differences between a source's protocol and ours (``known_differences`` of a papers file).

The rule (stated in ``AGREEMENT_RULE``, applied by ``agreement``):

- the **published band** of a setting is [min_i (v_i - r_i), max_i (v_i + r_i)] over every source i that publishes
  it, where v_i is the published value and r_i half a unit in the last digit printed (``4.70`` -> 0.005): the
  cross-source spread, widened by each number's own rounding. One source: its rounding interval alone.
- ours is **within** when our value lies in the band; **CI overlaps** when it does not but our 95% bootstrap CI
  [ci_low, ci_high] meets the band (the difference is not resolved by our sampling noise); **outside** when the CI
  (or, without a CI, the value) misses the band; **diverged** when our value is NaN. A number without a result of
  ours gets no verdict.

The CI is ours only: it covers the resampling noise of our samples, not the bias of FID at a smaller sample count,
nor reference statistics that differ; those are named as known differences beside the verdict.
"""

from __future__ import annotations

import math
import numbers
from decimal import Decimal, InvalidOperation
from typing import Any

from dpmbench.errors import DpmbenchError

WITHIN, OVERLAPS, OUTSIDE, DIVERGED = "within", "CI overlaps", "outside", "diverged"

AGREEMENT_RULE = ("Published band: [min, max] of every value published for the same setting (all papers and tables), "
                  "each widened by half a unit in its last printed digit (one source: its rounding alone). Agreement: "
                  f"**{WITHIN}** when ours lies in the band; **{OVERLAPS}** when it does not but our 95% CI meets "
                  f"the band; **{OUTSIDE}** when the CI (or the value, without a CI) misses it; **{DIVERGED}** when "
                  "ours is NaN. The CI covers our sampling noise only, not a sample count or reference statistics "
                  "other than the source's: those are the known differences beside the row.")

# kind -> what it means; a papers file's `known_differences[i].kind` is one of these
KINDS: dict[str, str] = {
    "reference-statistics": "the source computes its metric against other reference statistics than ours",
    "fid-implementation": "the same reference statistics, but the source's FID code (its Inception port, resize, "
                          "quantization) differs from ours",
    "sample-count": "the source's number of samples differs from ours",
    "unstated-setting": "the source leaves a setting unstated; ours runs the assumption named",
    "best-of": "the source reports the best of several runs or variants; ours is one run of one variant",
    "protocol": "ours follows a stated setting by another procedure than the source's code",
}
# the entry fields a known difference may be restricted to (`where`); `solver` matches the solver's name (before ':')
WHERE_KEYS = ("model", "metric", "solver", "nfe", "table", "guidance")


def half_unit(printed: str | float) -> float:
    """Half a unit in the last digit of a number as printed (``"4.70"`` -> 0.005, ``"12"`` -> 0.5, ``"1.2e-3"`` ->
    5e-5); an int as written, a float through its shortest repr."""
    text = printed if isinstance(printed, str) else str(printed) if isinstance(printed, int) else repr(float(printed))
    try:
        exponent = Decimal(text.strip()).as_tuple().exponent
    except InvalidOperation:
        return 0.0
    return 0.5 * 10.0 ** int(exponent) if isinstance(exponent, int) else 0.0


def published_band(published: list[tuple[float, str | float]]) -> tuple[float, float]:
    """The published band of one setting from its (value, as printed) pairs: [min(v - r), max(v + r)], r =
    ``half_unit`` of the printed number."""
    if not published:
        raise ValueError("published_band needs at least one published value")
    return (min(v - half_unit(p) for v, p in published), max(v + half_unit(p) for v, p in published))


def _finite(x: Any) -> bool:
    """A finite real number (numpy scalars included), not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))


def agreement(value: float, ci_low: float | None, ci_high: float | None, band: tuple[float, float]) -> str:
    """The verdict of our ``value`` (95% CI [ci_low, ci_high], NaN or None when absent) against the published
    ``band``: WITHIN, OVERLAPS, OUTSIDE or DIVERGED (the rule of this module's docstring)."""
    lo, hi = band
    if not _finite(value):
        return DIVERGED
    if lo <= value <= hi:
        return WITHIN
    if _finite(ci_low) and _finite(ci_high) and ci_low <= hi and ci_high >= lo:  # type: ignore[operator]
        return OVERLAPS
    return OUTSIDE


def known_difference_problem(d: Any) -> str:
    """The first problem of one ``known_differences`` item (a missing or bad field), or an empty string. Fields:
    ``kind`` (one of ``KINDS``), ``detail`` (what differs: the source's setting and ours), ``source`` (where the
    source's setting is stated: arXiv version and section, or owner/repo@commit:path:line), optional ``where`` (a
    mapping of entry fields in ``WHERE_KEYS`` to lists of values: the entries it applies to; all when absent)."""
    if not isinstance(d, dict):
        return "is not a mapping with kind, detail and source"
    for key in ("kind", "detail", "source"):
        if not isinstance(d.get(key), str) or not d[key].strip():
            return f"lacks {key!r} (a non-empty string)"
    if d["kind"] not in KINDS:
        return f"has kind={d['kind']!r}; allowed: {', '.join(KINDS)}"
    extra = sorted(set(d) - {"kind", "detail", "source", "where"})
    if extra:
        return f"has unknown field {extra[0]!r}; allowed: kind, detail, source, where"
    where = d.get("where", {})
    if not isinstance(where, dict) or (not where and "where" in d):
        return "has a 'where' that is not a non-empty mapping of entry fields to lists"
    for key, values in where.items():
        if key not in WHERE_KEYS:
            return f"has where.{key}; allowed: {', '.join(WHERE_KEYS)}"
        if not isinstance(values, list) or not values:
            return f"has where.{key}={values!r}; allowed: a non-empty list of values"
        if key == "nfe" and not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in values):
            return f"has where.nfe={values!r}; allowed: a list of integers >= 1"
    return ""


def _guidance_key(g: Any) -> str:
    return "none" if g in (None, "none") else str(float(g))


def applies(d: dict[str, Any], e: dict[str, Any]) -> bool:
    """Whether known difference ``d`` (validated) applies to published number ``e``: every field of its ``where``
    holds (``solver`` by the solver's name, ``guidance`` by its value, ``table`` as text); an entry that does not
    state a restricted field is not matched."""
    for key, values in (d.get("where") or {}).items():
        if key not in e:
            return False
        if key == "solver":
            ok = str(e["solver"]).partition(":")[0] in {str(v).partition(":")[0] for v in values}
        elif key == "guidance":
            ok = _guidance_key(e["guidance"]) in {_guidance_key(v) for v in values}
        elif key == "table":
            ok = str(e["table"]) in {str(v) for v in values}
        else:
            ok = e[key] in values
        if not ok:
            return False
    return True


def known_differences(doc: dict[str, Any], where: str = "") -> list[dict[str, Any]]:
    """A papers file's validated ``known_differences``, each with its label (D1, D2, ... in file order); a bad one
    raises a one-line DpmbenchError starting with ``where`` (the file)."""
    raw = doc.get("known_differences") or []
    if not isinstance(raw, list):
        raise DpmbenchError(f"{where}known_differences is not a list")
    out = []
    for j, d in enumerate(raw):
        problem = known_difference_problem(d)
        if problem:
            raise DpmbenchError(f"{where}known_differences[{j}] {problem}")
        out.append({**d, "label": f"D{j + 1}"})
    return out


def sample_count_difference(e: dict[str, Any], n_ours: Any) -> str:
    """A sample-count difference seen in the results themselves: ``"ours N, published M"`` when the entry states its
    ``n_samples`` and our row's differs, else ``""``."""
    stated = e.get("n_samples")
    if not isinstance(stated, int) or not _finite(n_ours) or int(n_ours) == stated:
        return ""
    return f"ours {int(n_ours):,}, published {stated:,}"


def spread_text(published: list[float], band: tuple[float, float]) -> str:
    """The published spread of a setting and its band, as the comparison prints them."""
    values = f"{min(published):g} .. {max(published):g} ({len(published)} values)" if len(published) > 1 else (
        "one source")
    return f"{values}; band {band[0]:g} .. {band[1]:g}"


def differences_text(e: dict[str, Any], n_ours: Any = None) -> str:
    """The known differences of published number ``e`` as the comparison prints them: the labels and kinds its
    paper declares (``D1 reference-statistics``), then a sample count of ours other than the one it states."""
    parts = [f"{d['label']} {d['kind']}" for d in e.get("differences") or []]
    seen = sample_count_difference(e, n_ours)
    return "; ".join(parts + ([f"sample-count: {seen}"] if seen else []))


def differences_legend(es: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The known differences that apply to any of the entries ``es`` (one paper's), once each, in label order."""
    seen: dict[str, dict[str, Any]] = {}
    for e in es:
        for d in e.get("differences") or []:
            seen.setdefault(d["label"], d)
    return sorted(seen.values(), key=lambda d: int(d["label"][1:]))


__all__ = ["AGREEMENT_RULE", "DIVERGED", "KINDS", "OUTSIDE", "OVERLAPS", "WHERE_KEYS", "WITHIN", "agreement", "applies",
           "differences_legend", "differences_text", "half_unit", "known_difference_problem", "known_differences",
           "published_band", "sample_count_difference", "spread_text"]
