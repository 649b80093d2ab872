"""Reported vs reproduced: the agreement rule (published band from the cross-source spread and each number's printed
rounding; ours within it, its CI overlapping it, or outside), the known differences of a papers file (validated,
applied to the entries their `where` names, shown beside each row) and a sample count of ours other than the
published one. Constructed inputs only: no run, no report directory."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from dpmbench.errors import DpmbenchError
from dpmbench.report.paper_agreement import (
    DIVERGED,
    OUTSIDE,
    OVERLAPS,
    WITHIN,
    agreement,
    applies,
    half_unit,
    published_band,
    sample_count_difference,
)
from dpmbench.report.paper_tables import papers_html
from dpmbench.report.papers import load_papers, paper_comparison_markdown, published_bands


@pytest.mark.parametrize(("printed", "half"), [("4.70", 0.005), ("4.7", 0.05), ("12", 0.5), ("0.055", 0.0005),
                                               ("1.2e-3", 5e-5), (4.7, 0.05), (12, 0.5)])
def test_half_unit_is_half_a_unit_in_the_last_printed_digit(printed: str | float, half: float) -> None:
    assert math.isclose(half_unit(printed), half, rel_tol=1e-12)


def test_the_band_is_the_cross_source_spread_widened_by_each_number_s_rounding() -> None:
    lo, hi = published_band([(4.70, "4.70"), (4.67, "4.67")])  # DPM-Solver's abstract and DPM-Solver-v3's Table 12
    assert math.isclose(lo, 4.665) and math.isclose(hi, 4.705)
    lo, hi = published_band([(3.87, "3.87")])  # one source: its rounding alone
    assert math.isclose(lo, 3.865) and math.isclose(hi, 3.875)
    lo, hi = published_band([(2.7, "2.7"), (2.6, "2.60")])  # each print widens its own end by its own rounding
    assert math.isclose(lo, 2.595) and math.isclose(hi, 2.75)
    with pytest.raises(ValueError):
        published_band([])


@pytest.mark.parametrize(("value", "ci", "verdict"), [
    (4.68, (4.60, 4.76), WITHIN),      # inside the spread of two sources
    (4.705, (np.nan, np.nan), WITHIN),  # on the band's edge, no CI needed
    (4.80, (4.70, 4.90), OVERLAPS),    # outside, but the CI reaches the band
    (4.50, (4.40, 4.666), OVERLAPS),   # below, the CI's upper end inside
    (4.80, (4.75, 4.85), OUTSIDE),     # the CI misses the band
    (4.80, (np.nan, np.nan), OUTSIDE),  # no CI: the value alone decides
    (4.80, (None, None), OUTSIDE),
    (np.nan, (np.nan, np.nan), DIVERGED),
])
def test_agreement_with_a_band_and_how_the_ci_enters(value: float, ci: tuple[Any, Any], verdict: str) -> None:
    assert agreement(value, ci[0], ci[1], (4.665, 4.705)) == verdict


def test_a_single_source_is_judged_by_its_rounding_and_our_ci() -> None:
    band = published_band([(3.87, "3.87")])
    assert agreement(3.874, np.nan, np.nan, band) == WITHIN
    assert agreement(3.90, np.nan, np.nan, band) == OUTSIDE  # 0.8% off: outside its rounding
    assert agreement(3.90, np.float64(3.85), np.float64(3.95), band) == OVERLAPS  # numpy scalars, as a frame gives


def _entry(**kw: Any) -> dict[str, Any]:
    return {"table": 1, "model": "m", "metric": "fid", "solver": "ddim", "nfe": 10, "schedule": "logsnr",
            "guidance": "none", "value": 4.70, "printed": "4.70", "source": "s", **kw}


def test_where_selects_entries_by_field_solver_name_guidance_and_table() -> None:
    e = _entry(solver="unipc:order=3", guidance=7.5, table="abstract")
    assert applies({}, e)
    assert applies({"where": {"solver": ["unipc"], "guidance": [7.5], "table": ["abstract"]}}, e)
    assert applies({"where": {"solver": ["unipc:variant=bh2"]}}, e)  # by the solver's name
    assert not applies({"where": {"solver": ["unipc-x"]}}, e)
    assert not applies({"where": {"guidance": ["none"]}}, e)
    assert not applies({"where": {"nfe": [5, 6]}}, e)
    assert not applies({"where": {"model": ["m"]}}, {k: v for k, v in e.items() if k != "model"})


def test_a_sample_count_other_than_the_published_one_is_seen_in_the_results() -> None:
    e = _entry(n_samples=50000)
    assert sample_count_difference(e, np.int64(1000)) == "ours 1,000, published 50,000"
    assert sample_count_difference(e, 50000) == ""
    assert sample_count_difference(_entry(), 1000) == ""  # the entry states no count: nothing to compare
    assert sample_count_difference(e, np.nan) == ""


def _write(tmp: Path, diffs: Any, entries: list[dict[str, Any]] | None = None) -> Path:
    doc = {"paper": "P", "known_differences": diffs, "entries": entries or [_entry()]}
    (tmp / "p.yaml").write_text(yaml.safe_dump(doc))
    return tmp


KD = {"kind": "reference-statistics", "detail": "their stats, ours EDM's", "source": "arXiv:1234.56789v1, App. D"}


@pytest.mark.parametrize(("diff", "message"), [
    ({**KD, "kind": "stats"}, "known_differences[0] has kind='stats'; allowed: reference-statistics, "
                              "fid-implementation, sample-count, unstated-setting, best-of, protocol"),
    ({k: v for k, v in KD.items() if k != "source"}, "known_differences[0] lacks 'source' (a non-empty string)"),
    ({**KD, "detail": " "}, "known_differences[0] lacks 'detail'"),
    ({**KD, "why": "x"}, "known_differences[0] has unknown field 'why'; allowed: kind, detail, source, where"),
    ({**KD, "where": {"modle": ["m"]}}, "known_differences[0] has where.modle; allowed: model, metric, solver, nfe"),
    ({**KD, "where": {"nfe": 10}}, "known_differences[0] has where.nfe=10; allowed: a non-empty list of values"),
    ({**KD, "where": {"nfe": ["10"]}}, "has where.nfe=['10']; allowed: a list of integers >= 1"),
    ({**KD, "where": {}}, "has a 'where' that is not a non-empty mapping"),
    ({**KD, "where": {"model": ["other"]}}, "known_differences[0] applies to no entry"),
])
def test_bad_known_differences_are_refused_in_one_line(tmp_path: Path, diff: dict[str, Any], message: str) -> None:
    with pytest.raises(DpmbenchError) as err:
        load_papers(_write(tmp_path, [diff]))
    assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DpmbenchError, match="known_differences is not a list"):
        load_papers(_write(tmp_path, KD))


def _results(rows: list[tuple[str, int, float, float, float, int]]) -> pd.DataFrame:
    return pd.DataFrame([{"model": "m", "solver": s, "nfe": n, "schedule": "logsnr", "guidance": "none",
                          "metric": "fid", "value": v, "ci_low": lo, "ci_high": hi, "n_samples": k}
                         for s, n, v, lo, hi, k in rows])


def _papers(tmp: Path) -> list[dict[str, Any]]:
    """Two sources of one setting (ddim NFE 10: 4.70 and 4.67), single-source cells, one cell never run, and two
    known differences: one for every FID, one for NFE 20 only."""
    (tmp / "a.yaml").write_text(yaml.safe_dump({"paper": "A", "known_differences": [
        KD, {"kind": "unstated-setting", "where": {"nfe": [20]}, "detail": "end time", "source": "arXiv:1234.56789v1"}],
        "entries": [_entry(n_samples=50000), _entry(nfe=20, value=2.87, printed="2.87"),
                    _entry(nfe=5, value=12.2, printed="12.2"), _entry(nfe=8, value=6.0, printed="6.0")]}))
    (tmp / "b.yaml").write_text(yaml.safe_dump({"paper": "B", "entries": [_entry(table=12, value=4.67,
                                                                                 printed="4.67")]}))
    return load_papers(tmp)


def test_the_comparison_shows_ci_delta_agreement_and_known_differences(tmp_path: Path) -> None:
    entries = _papers(tmp_path)
    bands = published_bands(entries)
    assert len(bands) == 4  # the two sources of ddim NFE 10 share one band
    df = _results([("ddim", 10, 4.69, 4.6, 4.8, 1000),  # within the two-source band; other sample count than A's
                   ("ddim", 20, 2.95, 2.85, 3.05, 50000),  # outside 2.87's rounding, CI overlapping
                   ("ddim", 5, 13.0, 12.8, 13.2, 50000)])  # CI misses 12.15 .. 12.25
    md = paper_comparison_markdown(df, entries)
    rows = {r.split(" | ")[5] + "/" + r.split(" | ")[0]: r for r in md.splitlines() if r.startswith("| ")
            and not r.startswith("| table")}
    assert rows["10/| 1"].endswith("| 4.69 [4.6, 4.8] | -0.01 | 4.67 .. 4.7 (2 values); band 4.665 .. 4.705 | "
                                   "within | D1 reference-statistics; sample-count: ours 1,000, published 50,000 |")
    assert rows["10/| 12"].endswith("| +0.02 | 4.67 .. 4.7 (2 values); band 4.665 .. 4.705 | within |  |")
    assert rows["20/| 1"].endswith("| +0.08 | one source; band 2.865 .. 2.875 | CI overlaps | "
                                   "D1 reference-statistics; D2 unstated-setting |")
    assert rows["5/| 1"].endswith("| +0.8 | one source; band 12.15 .. 12.25 | outside | D1 reference-statistics |")
    # a number not run: no verdict, its declared differences all the same
    assert rows["8/| 1"].endswith("| not run: no fid at NFE 8 for ddim in the results | | one source; band 5.95 .. "
                                  "6.05 | | D1 reference-statistics |")
    # each paper lists its known differences once, with the source, before its table
    assert md.count("- **D1** reference-statistics: their stats, ours EDM's (arXiv:1234.56789v1, App. D)") == 1
    assert md.count("- **D2** unstated-setting: end time (arXiv:1234.56789v1)") == 1
    assert md.index("- **D2**") < md.index("<details><summary>all 4 numbers")


def test_the_site_colours_each_verdict_and_lists_the_known_differences(tmp_path: Path) -> None:
    entries = _papers(tmp_path)
    df = _results([("ddim", 10, 4.69, 4.6, 4.8, 1000), ("ddim", 20, 2.95, 2.85, 3.05, 50000),
                   ("ddim", 5, 13.0, 12.8, 13.2, 50000)])
    page = papers_html(df, entries)
    assert page.count("class=\"ours yes\" title=\"within;") == 2  # A's and B's 4.70 / 4.67, both within the band
    assert page.count("class=\"ours near\" title=\"CI overlaps; one source; band 2.865 .. 2.875\"") == 1
    assert page.count("class=\"ours no\" title=\"outside;") == 1
    assert "<div class=kd>D1 reference-statistics; sample-count: ours 1,000, published 50,000</div>" in page
    assert page.count("<li><b>D1</b> reference-statistics: their stats, ours EDM&#x27;s") == 1
