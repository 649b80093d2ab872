"""The dress rehearsal's overlay and matching rules (``tests/rehearsal.py``; the run itself is ``make rehearse``)."""

from __future__ import annotations

import copy
from typing import Any

import rehearsal
import yaml

from dpmbench.grid import guidance_key

CONFIGS = {p.stem: yaml.safe_load(p.read_text()) for p in sorted(rehearsal.CONFIGS.glob("*.yaml"))}


def test_every_checkpoint_of_a_paper_config_has_a_stand_in_or_a_reason() -> None:
    named = {m for c in CONFIGS.values() for m in c.get("models") or {}}
    recipes = set(rehearsal.EDM) | set(rehearsal.SCORE_SDE) | set(rehearsal.DIFFUSERS) | rehearsal.GUIDED_DIFFUSION
    assert named - recipes == set(rehearsal.EXCLUDED), named - recipes
    assert not recipes & set(rehearsal.EXCLUDED)


def _strip(config: dict[str, Any]) -> dict[str, Any]:
    """A config without what the overlay may set."""
    out = copy.deepcopy(config)
    for key in ("device", "samples_per_shard", "fit_samples_max", "checkpoints"):
        out.pop(key, None)
    for stage in (out.get("resources") or {}).values():
        stage.pop("threads", None)
    for mc in (out.get("models") or {}).values():
        mc.pop("num_samples", None)
        mc.pop("reference_stats", None)
    return out


def test_the_overlay_changes_only_device_sample_counts_fit_cap_threads_statistics_and_checkpoints(
        monkeypatch: Any) -> None:
    entries = {m: {"adapter": "stand-in"} for c in CONFIGS.values() for m in c.get("models") or {}}
    for name, config in CONFIGS.items():
        over = rehearsal.overlay(config, entries, "stats.npz")
        run = rehearsal.merged(config, over)
        kept = {m: mc for m, mc in config["models"].items() if m not in rehearsal.EXCLUDED}
        assert _strip(run) == _strip({**config, "models": kept}), name
        assert run["device"] == "cpu" and run["samples_per_shard"] == rehearsal.SAMPLES
        assert run["fit_samples_max"] == rehearsal.FIT_SAMPLES
        assert all(r["threads"] == 1 for r in (run.get("resources") or {}).values()), name
        for m, mc in run["models"].items():
            assert mc["num_samples"] == rehearsal.SAMPLES
            assert mc.get("reference_stats") == ("stats.npz" if "reference_stats" in config["models"][m] else None)
        assert set(run.get("checkpoints", {})) == set(kept), name
    guided = CONFIGS["dpm-solver-pp-imagenet256-guided"]
    assert set(rehearsal.merged(guided, rehearsal.overlay(guided, entries, "s.npz"))["models"]) == {
        "adm-imagenet256-classifier-guided"}
    # a model no stand-in can represent is left out of its config's run (and its numbers listed with the reason)
    monkeypatch.setattr(rehearsal, "EXCLUDED", {"adm-imagenet256-classifier-guided": "no adapter"})
    over = rehearsal.overlay(guided, entries, "s.npz")
    assert over["models"] == {} and over["checkpoints"] == {}
    assert rehearsal.merged(guided, over)["models"] == {}


def test_a_published_number_matches_a_cell_on_what_it_states() -> None:
    key = ("m", "ddim", "fid", 10, "logsnr", "none")
    canon = str  # specs here are canonical already

    def pub(**kw: Any) -> bool:
        return rehearsal._publishes({"model": "m", "metric": "fid", "nfe": 10, "solver": "ddim", **kw}, key, canon,
                                    guidance_key)

    assert pub() and pub(schedule="logsnr") and pub(guidance="none")
    assert not pub(schedule="karras") and not pub(guidance=7.5) and not pub(nfe=12) and not pub(solver="heun")
