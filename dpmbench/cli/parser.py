"""The command line's parser: every subcommand and option, with one-line errors (exit code 2) for bad values."""

from __future__ import annotations

import argparse
import math
import re
import sys
from typing import Any, NoReturn

from dpmbench.errors import did_you_mean

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    _given: list[str] = []

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        self._given = list(sys.argv[1:] if args is None else args)  # for the "did you mean" of a misspelt option
        return super().parse_known_args(args, namespace)

    def _misspelt_option(self) -> str:
        """``invalid option '--nfes'; did you mean '--nfe'?`` for the first given option this (sub)command lacks
        and that is close to one it has (``--nfes 10`` otherwise reads as "--nfe is required"), else ``""``."""
        if self._subparsers is not None:  # the options after a subcommand are its parser's to judge
            for action in self._subparsers._group_actions:
                sub = next((action.choices[t] for t in self._given if t in (action.choices or {})), None)
                if isinstance(sub, _Parser):
                    return sub._misspelt_option()
            return ""
        known = [o for o in self._option_string_actions if o.startswith("--")]
        for token in self._given:
            name = token.split("=", 1)[0]
            if name.startswith("--") and name not in self._option_string_actions:
                hint = did_you_mean(name, known)
                if hint:
                    return f"invalid option {name!r}; {hint}"
        return ""

    def error(self, message: str) -> NoReturn:
        message = self._misspelt_option() or message
        m = re.match(r".*invalid choice: '([^']*)' \(choose from (.*)\)$", message)
        if m:  # argparse's "invalid choice" gets the "did you mean" of every other name error
            hint = did_you_mean(m.group(1), re.findall(r"'([^']*)'", m.group(2)))
            message = f"{message}; {hint}" if hint else message
        self.exit(EXIT_USAGE, f"dpmbench: error: {message}\n")


def _nfe_list(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid --nfe {text!r}; allowed: integers >= 1, comma-separated") from None
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"invalid --nfe {text!r}; allowed: integers >= 1, comma-separated")
    return vals


def _number(name: str, cast: type, ok: Any, allowed: str) -> Any:
    """An argparse type: ``cast(text)`` accepted when ``ok(value)``, else a one-line error naming ``name``."""

    def parse(text: str) -> Any:
        try:
            v = cast(text)
        except ValueError:
            v = None
        if v is None or not ok(v):
            raise argparse.ArgumentTypeError(f"invalid {name} {text!r}; allowed: {allowed}")
        return v

    return parse


def _positive_int(name: str) -> Any:
    return _number(name, int, lambda v: v >= 1, "integers >= 1")


def _nonneg_int(name: str) -> Any:
    return _number(name, int, lambda v: v >= 0, "integers >= 0")


def _float(name: str) -> Any:
    return _number(name, float, math.isfinite, "a finite number")


TRUST_HELP = ("use files of the manifests that have no pinned sha256 (checkpoints, reference statistics, metric "
              "weights) for this run only (also DPMBENCH_TRUST_UNPINNED=1): their sha256 is recorded in the provenance "
              "and every result computed from them is marked unpinned; a pickle among them is unpickled, which runs "
              "whatever code it holds")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dpmbench`` command."""
    p = _Parser(prog="dpmbench", description="Benchmark of fast diffusion-model samplers.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    ls = sub.add_parser("list", help="list solvers, models, metrics, schedules, searches or papers (coverage of the "
                        "published numbers by config/reproductions/*.yaml)")
    ls.add_argument("what", choices=["solvers", "models", "metrics", "schedules", "searches", "papers"])

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--model", required=True)
        q.add_argument("--num-samples", type=_positive_int("--num-samples"), required=True)
        q.add_argument("--seed", type=_nonneg_int("--seed"), required=True)
        q.add_argument("--guidance", type=_float("--guidance"), default=None,
                       help="classifier-free guidance scale (class labels i mod num_classes)")
        q.add_argument("--t-end", type=_float("--t-end"), default=None)
        q.add_argument("--t-start", type=_float("--t-start"), default=None,
                       help="the time the solver starts from with x_T (default: the schedule's T; a flow model's T = 1 "
                       "is pure noise, where only ddim, flow-euler and flow-heun start: e.g. 0.999 for the others)")
        q.add_argument("--batch-size", type=_positive_int("--batch-size"), default=None)
        q.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
        q.add_argument("--captions", default=None, help="text-conditional models: captions file (MS-COCO captions "
                       "JSON or one per line); sample i gets caption i of a subset chosen with --seed")
        q.add_argument("--out", required=True)
        q.add_argument("--trust-unpinned", action="store_true", help=TRUST_HELP)

    s = sub.add_parser("sample", help="sample with one solver and one (or several) NFE budgets")
    common(s)
    s.add_argument("--solver", required=True, help="NAME[:key=value,...]")
    s.add_argument("--nfe", type=_nfe_list, required=True, help="an NFE budget, or a comma list with {nfe} in --out")
    s.add_argument("--schedule", default="logsnr")
    s.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    s.add_argument("--start", type=_nonneg_int("--start"), default=0,
                   help="index of the first sample (a shard: samples START..START+K-1 of the seed's stream)")

    se = sub.add_parser("search", help="run a search (time grid, solver schedule, ...) and save it by name")
    se.add_argument("kind", help="a search name (`dpmbench list searches`)")
    se.add_argument("--model", required=True)
    se.add_argument("--nfe", type=_nfe_list, required=True, help="an NFE budget or a comma list")
    se.add_argument("--solver", default=None, help="NAME[:key=value,...]: the solver searched for")
    se.add_argument("--guidance", type=_float("--guidance"), default=None)
    se.add_argument("--schedule", default="logsnr", help="the timestep schedule the search starts from")
    se.add_argument("--t-end", type=_float("--t-end"), default=None)
    se.add_argument("--seed", type=_nonneg_int("--seed"), default=0)
    se.add_argument("--set", default="", help="search options key=value,...")
    se.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    se.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    se.add_argument("--name", default=None, help="save the result as this named artifact (e.g. for "
                    "--schedule searched:NAME)")
    se.add_argument("--out", default=None, help="also write the result to this JSON file")
    se.add_argument("--trust-unpinned", action="store_true", help=TRUST_HELP)

    pr = sub.add_parser("prepare", help="compute a solver's cached artifacts (searches, model statistics) once")
    pr.add_argument("--model", required=True)
    pr.add_argument("--solver", required=True, help="NAME[:key=value,...]")
    pr.add_argument("--nfe", type=_nfe_list, required=True)
    pr.add_argument("--guidance", type=_float("--guidance"), default=None)
    pr.add_argument("--schedule", default="logsnr")
    pr.add_argument("--t-end", type=_float("--t-end"), default=None)
    pr.add_argument("--t-start", type=_float("--t-start"), default=None, help="where sampling starts (as sample's)")
    pr.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    pr.add_argument("--captions", default=None, help="text-conditional models: captions file of the fit prompts")
    pr.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    pr.add_argument("--out", required=True, help="JSON summary of what was prepared")
    pr.add_argument("--trust-unpinned", action="store_true", help=TRUST_HELP)

    r = sub.add_parser("reference", help="exact ODE solutions of an oracle model (or a high-NFE solver run) "
                       "from the same x_T")
    common(r)
    r.add_argument("--solver", default=None, help="NAME[:key=value,...]: a high-NFE reference run instead of the "
                   "exact solution (e.g. dpm-solver++ with --nfe 500, or ddim with --nfe 999); needs --nfe")
    r.add_argument("--nfe", type=_positive_int("--nfe"), default=None)
    r.add_argument("--schedule", default="logsnr", help="timestep schedule of the --solver run")

    e = sub.add_parser("evaluate", help="compute metrics of a samples file")
    e.add_argument("--samples", required=True, nargs="+", help="one or more samples files")
    e.add_argument("--metrics", required=True)
    e.add_argument("--reference", default=None)
    e.add_argument("--bootstraps", type=_nonneg_int("--bootstraps"), default=200)
    e.add_argument("--fid-backend", choices=["torch-fidelity", "clean-fid"], default="torch-fidelity",
                   help="library computing fid/is/kid/fdd features (default torch-fidelity)")
    e.add_argument("--cleanfid-mode", choices=["clean", "legacy_tensorflow"], default="clean")
    e.add_argument("--fid-stats", default=None, help="fid reference statistics: a name in "
                   "reference_stats/manifest.yaml or an .npz with mu/sigma")
    e.add_argument("--fid-implementation", default=None, help="the FID implementation of the published numbers these "
                   "samples are compared with (a name of fid_implementations in reference_stats/manifest.yaml); "
                   "recorded in the metrics file's protocol")
    e.add_argument("--kid-reference", default=None, help="kid reference features (.npz, key feats or features)")
    e.add_argument("--prdc-reference", default=None, help="reference features of precision/recall/density/coverage "
                   "on Inception features (.npz, key feats or features; digits samples use the 1,797 digits)")
    e.add_argument("--reference-images", default=None, help="reference images (.npz, key x) for fid/kid/"
                   "fd_dinov2/cmmd/the k-NN metrics: their features are computed once and cached under "
                   "$DPMBENCH_CACHE/features")
    e.add_argument("--inception-weights", default=None,
                   help="local Inception weights (else env DPMBENCH_INCEPTION_WEIGHTS / DPMBENCH_CLEANFID_INCEPTION, "
                   "else the libraries' caches)")
    e.add_argument("--clip-model", default="ViT-L-14")
    e.add_argument("--clip-pretrained", default="openai")
    e.add_argument("--clip-weights", default=None, help="local CLIP weights (else env DPMBENCH_CLIP_WEIGHTS)")
    e.add_argument("--fd-dinov2-stats", default=None, help="fd_dinov2 reference statistics: an .npz with mu/sigma of "
                   "DINOv2 features or a name in reference_stats/manifest.yaml")
    e.add_argument("--dinov2-weights", default=None, help="local DINOv2 folder (config.json, model.safetensors; else "
                   "env DPMBENCH_DINOV2_WEIGHTS, else the manifest entry dinov2-vitl14)")
    e.add_argument("--cmmd-reference", default=None, help="cmmd reference embeddings (.npz, key feats or features)")
    e.add_argument("--cmmd-weights", default=None, help="local CLIP ViT-L/14@336 weights for cmmd (OpenAI's "
                   "ViT-L-14-336px.pt or a state dict; else env DPMBENCH_CMMD_WEIGHTS, else the manifest's file)")
    e.add_argument("--eval-batch-size", type=_positive_int("--eval-batch-size"), default=64,
                   help="feature-extraction batch size")
    e.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    e.add_argument("--out", required=True, nargs="+", help="one metrics file per samples file")
    e.add_argument("--trust-unpinned", action="store_true", help=TRUST_HELP)

    mj = sub.add_parser("metrics-job", help="the workflow's metrics job: concatenate each cell's shards, evaluate")
    mj.add_argument("--cells", nargs="+", required=True, help="one comma list of shard files per cell")
    mj.add_argument("--out", nargs="+", required=True, help="one metrics file per cell")
    mj.add_argument("--metrics", required=True)
    mj.add_argument("--trust-unpinned", action="store_true", help=TRUST_HELP)
    mj.add_argument("--reference", default=None)
    mj.add_argument("--seed", type=int, default=None)
    mj.add_argument("--fid-stats", default=None, help="fid reference statistics (as dpmbench evaluate's)")
    mj.add_argument("--fid-implementation", default=None, help="the published numbers' FID implementation (as "
                    "dpmbench evaluate's)")

    va = sub.add_parser("validate", help="check a workflow config (one line naming the bad key, exit code 2)")
    va.add_argument("configfile")

    rep = sub.add_parser("report", help="aggregate (and merge) metric files into results.csv, leaderboard.md and "
                         "a static site")
    rep.add_argument("results_dir", nargs="+", help="one or more results directories (several: merged; cells that "
                     "differ in protocol are shown apart, identical cells must agree)")
    rep.add_argument("--out", default="reports")
    rep.add_argument("--previous-claims", default=None, help="the claims.md this report replaces (default: the one in "
                     "--out, if any): claims.md then closes with every verdict that changed, before -> after, and why")
    rep.add_argument("--site", default=None, help="also write a self-contained static site (index.html and a page "
                     "per model) into this directory")
    rep.add_argument("--papers", default=None,
                     help="directory of published numbers (papers/*.yaml; default: ./papers if it exists)")
    rep.add_argument("--jobs", type=_positive_int("--jobs"), default=1,
                     help="processes drawing the figures (default 1)")

    rc = sub.add_parser("recommend", help="which solver and schedule to use for a model with at most N NFE: the best "
                        "with its CI, the solvers tied with it, and the line to use it in diffusers")
    rc.add_argument("results", help="a results directory (paired ties: the metric files' bootstrap replicates), a "
                    "reports directory or a results.csv (ties by overlapping 95% CIs)")
    rc.add_argument("--model", required=True)
    rc.add_argument("--nfe", type=_positive_int("--nfe"), required=True, help="the NFE budget: the best cell at "
                    "NFE <= N")
    rc.add_argument("--metric", default=None, help="default: the model's first of sw2_true, fdd, fid, rmse_exact, "
                    "mse_ref")

    pl = sub.add_parser("pull", help="download and verify (sha256) a checkpoint of the manifest")
    pl.add_argument("id", help="a checkpoint id (`dpmbench list models`)")
    pl.add_argument("--manifest", default=None, help="a manifest or run config whose `checkpoints:` entries add to "
                    "(or override) config/checkpoints.yaml")
    pl.add_argument("--offline", action="store_true", help="never open a connection (also DPMBENCH_OFFLINE=1): "
                    "verify what is there and say which file to place where")
    pl.add_argument("--no-progress", action="store_true", help="no progress bar")
    pl.add_argument("--trust-unpinned", action="store_true", help=TRUST_HELP)

    tr = sub.add_parser("train", help="train one of the project's own networks (digits-unet, or its flow-matching "
                        "twin digits-flow) and save it in diffusers' save_pretrained layout")
    tr.add_argument("model", choices=["digits-unet", "digits-flow"])
    tr.add_argument("--out", required=True, help="output folder (written whole, then renamed into place)")
    tr.add_argument("--steps", type=_positive_int("--steps"), default=None,
                    help="optimizer steps (default: those of the shipped weights)")
    tr.add_argument("--batch-size", type=_positive_int("--batch-size"), default=None,
                    help="images per step (default: that of the shipped weights, 64)")
    tr.add_argument("--seed", type=_nonneg_int("--seed"), default=None)
    tr.add_argument("--device", default="cpu", help="cpu or cuda")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")

    reg = sub.add_parser("regress", help="fail (exit 1) when results are worse than a baseline; improvements beyond "
                         "tolerance are listed, and fail (exit 3) with --fail-on-improvement")
    reg.add_argument("--baseline", required=True)
    reg.add_argument("--results", required=True)
    reg.add_argument("--fail-on-improvement", action="store_true",
                     help="exit 3 when a cell is better than the baseline beyond tolerance (and none worse): numbers "
                     "that moved either way are seen until the baseline is refreshed on purpose (make baseline)")
    reg.add_argument("--config", default=None, help="YAML with regression.tolerances: metric -> rtol/atol/stochastic")
    return p


# -- commands --------------------------------------------------------------------------------------------
