"""Flow-matching models (``flow`` schedule: x_t = (1 - t) x0 + t eps, velocity v = eps - x0): the -flow oracles and
their exact solutions, the samplers in flow time (flow-euler = DDIM), the exponential integrators through the
log-SNR, the start at pure noise (t = 1), and the shifted time grids against diffusers' FlowMatchEulerDiscreteScheduler
under the published scheduler configs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dpmbench import list_models, load_model, sample
from dpmbench.errors import DpmbenchError
from dpmbench.flowgrids import FLOW_CONFIGS, flux_mu, static_shift
from dpmbench.timesteps import timesteps

FLOW_ORACLES = ["gmm-2d-flow", "gmm-digits-flow", "digits-empirical-flow"]


def _lam_range(vp):  # noqa: ANN001, ANN202
    """The VP oracle's log-SNR range (t in [1e-3, T]) and the flow times with the same log-SNR."""
    lam = torch.tensor([vp.schedule.lambda_(vp.schedule.T), vp.schedule.lambda_(1e-3)], dtype=torch.float64)
    t0, t1 = (float(t) for t in torch.sigmoid(-lam))  # flow: lambda = log((1 - t) / t)
    return t0, t1


def test_flow_oracles_are_listed_and_predict_the_velocity() -> None:
    assert set(FLOW_ORACLES) <= set(list_models())
    for name in FLOW_ORACLES[:2]:
        m, vp_x0 = load_model(name), load_model(name.removesuffix("-flow"), schedule="flow")
        assert m.parameterization == "flow" and m.schedule.kind == "flow" and m.schedule.T == 1.0
        x = m.prior(8, seed=0, dtype=torch.float64)
        for t in (1.0, 0.7, 0.05):
            v, x0 = m.forward(x, t), vp_x0.forward(x, t)  # velocity; the same mixture's exact x0
            eps = (x - (1 - t) * x0) / t
            torch.testing.assert_close(v, eps - x0, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(m.x0(x, t), x0, rtol=1e-12, atol=1e-12)  # x0 = x - t v
        torch.testing.assert_close(m.eps(x, 1.0), x, rtol=0, atol=0)  # pure noise: eps = x exactly


@pytest.mark.parametrize("name", ["gmm-2d", "gmm-digits"])
def test_exact_solution_is_the_vp_oracle_s_mapped_through_the_change_of_schedule(name: str) -> None:
    """Same data, same log-SNR range, same x_T up to the prior's scaling (x / sigma): in (lambda, x / sigma) the two
    probability-flow ODEs are one, so the exact solutions agree to the integrator's tolerance (measured: 3e-15
    relative)."""
    vp, flow = load_model(name), load_model(name + "-flow")
    t0, t1 = _lam_range(vp)
    x_T = vp.prior(16, seed=0, dtype=torch.float64)
    y_vp = vp.exact_solution(x_T, t_end=1e-3, cache=False) / vp.schedule.sigma(1e-3)
    x_T_flow = x_T * flow.schedule.sigma(t0) / vp.schedule.sigma(vp.schedule.T)
    y_flow = flow.exact_solution(x_T_flow, t_end=t1, t_start=t0, cache=False) / flow.schedule.sigma(t1)
    assert float((y_vp - y_flow).abs().max()) <= 1e-9 * float(y_vp.abs().max())


def test_exact_solution_from_pure_noise() -> None:
    """From t = 1 (log-SNR -inf) the integration starts at log-SNR -40 (dpmbench.models.exact.PURE_NOISE_LAMBDA):
    the same as starting at log-SNR -25 from the same x / sigma (which skips e^-25 ~ 1e-11), to the integrator's
    tolerance (measured: 1.4e-8 apart, from its different steps; 1.0e-8 from -30, 9.0e-9 from -35)."""
    m = load_model("gmm-digits-flow")
    x_T = m.prior(8, seed=1, dtype=torch.float64)
    a = m.exact_solution(x_T, cache=False)
    t_25 = float(torch.sigmoid(torch.tensor(25.0, dtype=torch.float64)))
    b = m.exact_solution(x_T * t_25, t_start=t_25, cache=False)
    assert torch.isfinite(a).all() and float((a - b).abs().max()) < 1e-7


@pytest.mark.parametrize("guidance", [None, 3.0])
def test_euler_in_flow_time_is_ddim(guidance: float | None) -> None:
    """Euler in t on v (diffusers' FlowMatchEuler rule) and DDIM give the same samples to round-off, from pure noise
    on SD3's grid and on the VP oracle (in flow time, tau = sigma / (alpha + sigma))."""
    for name, kind in (("gmm-digits-flow", "diffusers-flow-sd3"), ("gmm-digits-flow", "time-uniform"),
                       ("gmm-digits", "logsnr")):
        m = load_model(name)
        x_T = m.prior(16, seed=0, dtype=torch.float64)
        cond = None if guidance is None else m.labels(16)
        a = sample(m, "flow-euler", 8, x_T, schedule=kind, guidance=guidance, cond=cond)
        b = sample(m, "ddim", 8, x_T, schedule=kind, guidance=guidance, cond=cond)
        assert float((a - b).abs().max()) <= 1e-12 * max(1.0, float(b.abs().max())), (name, kind)


def test_guidance_on_flow_models_combines_velocities_and_is_defined_at_pure_noise() -> None:
    from dpmbench.models.base import Guided

    m = load_model("gmm-2d-flow")
    x, c = m.prior(8, seed=0, dtype=torch.float64), m.labels(8)
    g = Guided(m, 4.0)
    v_c, v_u = m.predict(x, 0.6, c, "flow"), m.predict(x, 0.6, None, "flow")
    torch.testing.assert_close(g.forward(x, 0.6, c), v_u + 4.0 * (v_c - v_u), rtol=1e-12, atol=1e-12)
    # eps-space guidance agrees wherever alpha > 0 ...
    e_c, e_u = m.eps(x, 0.6, c), m.eps(x, 0.6)
    torch.testing.assert_close(g.eps(x, 0.6, c), e_u + 4.0 * (e_c - e_u), rtol=1e-10, atol=1e-10)
    # ... and at t = 1 only the velocity carries x0: the guided data prediction is the guided class means' mix
    x0 = g.x0(x, 1.0, c)
    assert torch.isfinite(x0).all()
    torch.testing.assert_close(x0, m.x0(x, 1.0) + 4.0 * (m.x0(x, 1.0, c) - m.x0(x, 1.0)), rtol=1e-12, atol=1e-12)


def _orders(model, spec: str, x_T: torch.Tensor, t0: float, t1: float, nfes=(10, 20, 40)) -> list[float]:  # noqa: ANN001
    ref = model.exact_solution(x_T, t_end=t1, t_start=t0)
    err = [float(((sample(model, spec, n, x_T, t_start=t0, t_end=t1) - ref) ** 2).mean().sqrt()) for n in nfes]
    return [math.log2(a / b) for a, b in zip(err, err[1:], strict=False)]


@pytest.mark.parametrize("spec", ["dpm-solver++:order=2,method=multistep", "unipc:variant=bh2,order=3",
                                  "deis:order=3,method=rhoab", "dpm-solver:order=3", "ipndm"])
def test_exponential_integrators_measure_the_same_orders_on_flow_as_on_vp(spec: str) -> None:
    """Through lambda = log((1 - t) / t), on the logSNR grid of the same log-SNR range, an exponential integrator
    takes the same steps in (lambda, x / sigma) on both schedules: equal measured orders."""
    vp, flow = load_model("gmm-digits"), load_model("gmm-digits-flow")
    t0, t1 = _lam_range(vp)
    x_T = vp.prior(16, seed=0, dtype=torch.float64)
    o_vp = _orders(vp, spec, x_T, vp.schedule.T, 1e-3)
    o_flow = _orders(flow, spec, x_T * flow.schedule.sigma(t0) / vp.schedule.sigma(vp.schedule.T), t0, t1)
    assert o_flow == pytest.approx(o_vp, abs=1e-6)


def test_flow_samplers_converge_at_their_orders_from_pure_noise() -> None:
    """Measured on gmm-2d-flow from t = 1, time-uniform grid, NFE 40 / 80 / 160: flow-euler 0.95, 0.97; flow-heun
    1.81, 1.86 (approaching 1 and 2)."""
    m = load_model("gmm-2d-flow")
    x_T = m.prior(16, seed=0, dtype=torch.float64)
    ref = m.exact_solution(x_T)
    for spec, lo, hi in (("flow-euler", 0.9, 1.1), ("flow-heun", 1.75, 2.2)):
        err = [float(((sample(m, spec, n, x_T, schedule="time-uniform") - ref) ** 2).mean().sqrt())
               for n in (40, 80, 160)]
        assert all(lo < math.log2(a / b) < hi for a, b in zip(err, err[1:], strict=False)), (spec, err)


def test_a_solver_that_cannot_start_at_pure_noise_refuses_in_one_line() -> None:
    m = load_model("gmm-2d-flow")
    x_T = m.prior(4, seed=0)
    with pytest.raises(DpmbenchError, match=r"invalid t_start 1\.0 for solver 'dpm-solver\+\+': it is pure noise") \
            as exc:
        sample(m, "dpm-solver++", 10, x_T, schedule="time-uniform")
    assert "\n" not in str(exc.value) and "flow-euler" in str(exc.value)
    with pytest.raises(DpmbenchError, match="log-SNR is infinite"):
        sample(m, "flow-euler", 10, x_T)  # logsnr from t = 1
    x = sample(m, "dpm-solver++", 10, x_T, schedule="flow-shift:3", t_start=0.999)  # below 1: it runs
    assert torch.isfinite(x).all()


# The published scheduler/scheduler_config.json files, as read (the gated stabilityai repos through public
# re-uploads of them, identical 141-byte files; see dpmbench/flowgrids.py for each source):
PUBLISHED = {
    "stabilityai/stable-diffusion-3-medium-diffusers": ("sd3", {"num_train_timesteps": 1000, "shift": 3.0}),
    "stabilityai/stable-diffusion-3.5-medium": ("sd3", {"num_train_timesteps": 1000, "shift": 3.0}),
    "stabilityai/stable-diffusion-3.5-large": ("sd3", {"num_train_timesteps": 1000, "shift": 3.0}),
    "black-forest-labs/FLUX.1-dev": ("flux-dev", {
        "base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 4096, "max_shift": 1.15,
        "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True}),
    "black-forest-labs/FLUX.1-schnell": ("flux-schnell", {
        "base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 4096, "max_shift": 1.15,
        "num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False}),
}


@pytest.mark.parametrize("repo", list(PUBLISHED))
def test_diffusers_flow_grids_equal_flow_match_euler_sigmas(repo: str) -> None:
    """For 1-50 steps, every sigma kind, and (FLUX.1-dev) two image sizes: diffusers' sigmas (float32) equal ours cast
    to float32, bit for bit; the pipeline's way of calling set_timesteps (SD3: nothing passed; FLUX: sigmas
    linspace(1, 1/n, n) and mu from the token count)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    model, config = PUBLISHED[repo]
    assert {k: v for k, v in FLOW_CONFIGS[model].items() if k in config} == config
    flow = load_model("gmm-2d-flow").schedule
    flux = FLOW_CONFIGS[model]["pipeline"] == "flux"
    for kind, flag in (("", None), ("-karras", "use_karras_sigmas"), ("-exponential", "use_exponential_sigmas"),
                       ("-beta", "use_beta_sigmas")):
        sch = FlowMatchEulerDiscreteScheduler(**config, **({flag: True} if flag else {}))
        for tokens in ((4096, 1024) if model == "flux-dev" else (None,)):
            name = f"diffusers-flow-{model}{kind}" + (f":{tokens}" if tokens else "")
            for n in range(1, 51):
                if flux:
                    sch.set_timesteps(n, sigmas=np.linspace(1.0, 1 / n, n), mu=flux_mu(tokens or 4096))
                else:
                    sch.set_timesteps(n)
                assert sch.sigmas[-1] == 0  # diffusers' final jump: our denoise_to_zero
                ours = timesteps(name, n - 1, flow) if n > 1 else None
                if ours is None:  # one inference step: a single sigma, no grid step; compare the value itself
                    from dpmbench.flowgrids import flow_match_sigmas

                    ours = torch.from_numpy(flow_match_sigmas(model, 1, kind, tokens or 4096))
                assert torch.equal(ours.to(torch.float32), sch.sigmas[:-1]), (name, n)


def test_diffusers_flow_grid_with_denoise_to_zero_spends_diffusers_evaluations() -> None:
    """N evaluations = diffusers' N inference steps: an N-point grid (N - 1 steps) plus the final jump to 0."""
    from dpmbench.models.base import NFECounter
    from dpmbench.solvers.registry import get_solver

    m = load_model("gmm-2d-flow")
    counted = NFECounter(m)
    sol = get_solver("flow-euler:denoise_to_zero=true")
    plan = sol.make_plan(10, m.schedule, "diffusers-flow-sd3")
    sol.run(counted, m.prior(4, seed=0, dtype=torch.float64), plan)
    assert counted.count == 10 and len(plan.points) == 10 and plan.points[0].t == 1.0


def test_shift_grids() -> None:
    flow = load_model("gmm-2d-flow").schedule
    t = timesteps("flow-shift:3", 8, flow)
    assert float(t[0]) == 1.0 and float(t[-1]) == flow.t_end_default and bool((t[1:] < t[:-1]).all())
    u = torch.linspace(0.0, 1.0, 9, dtype=torch.float64)  # uniform before the shift, end points mapped back
    lo = 1e-3 / (3 - 2 * 1e-3)
    torch.testing.assert_close(t[1:-1], static_shift(1.0 + u * (lo - 1.0), 3.0)[1:-1], rtol=1e-14, atol=0)
    torch.testing.assert_close(timesteps("flow-shift:1", 8, flow), timesteps("time-uniform", 8, flow))
    torch.testing.assert_close(timesteps("flux-shift:4096", 8, flow),
                               timesteps(f"flow-shift:{math.exp(1.15)!r}", 8, flow), rtol=1e-12, atol=0)
    for bad, word in (("flow-shift:-1", "positive number"), ("flux-shift:1.5", "positive integer"),
                      ("diffusers-flow-sd3:1024", "token count"), ("diffusers-flow-nope", "allowed")):
        with pytest.raises(DpmbenchError, match=word):
            timesteps(bad, 4, flow)
    with pytest.raises(DpmbenchError, match="times are those of the flow schedule"):
        timesteps("flow-shift:3", 4, load_model("gmm-2d").schedule)


def test_first_measurements_on_gmm_2d_flow_as_in_the_docs() -> None:
    """docs/flow.md "First measurements" (gmm-2d-flow, 256 samples, seed 0, RMSE to the exact solution): the
    unshifted grid beats SD3's shift 3; UniPC-bh2-2 beats Euler at NFE <= 10; DPM-Solver++(2M) gets worse from NFE 8
    to 10, where its official lower_order_final stops lowering the last step (without it, NFE 8 is as bad)."""
    m = load_model("gmm-2d-flow")
    x_T = m.prior(256, seed=0, dtype=torch.float64)
    ref = m.exact_solution(x_T)

    def rmse(spec: str, nfe: int, shift: int, start: float | None = None) -> float:
        x = sample(m, spec, nfe, x_T, schedule=f"flow-shift:{shift}", t_start=start)
        return float(((x - ref) ** 2).mean().sqrt())

    euler = [rmse("flow-euler", n, 1) for n in (4, 10)]
    assert euler == pytest.approx([0.0991, 0.0290], rel=5e-3)
    assert [rmse("flow-euler", n, 3) for n in (4, 10)] == pytest.approx([0.346, 0.0805], rel=5e-3)
    unipc = [rmse("unipc:variant=bh2,order=2", n, 1, 0.999) for n in (4, 10)]
    assert unipc == pytest.approx([0.0775, 0.0265], rel=5e-3) and all(u < e for u, e in zip(unipc, euler, strict=True))
    dpm = "dpm-solver++:order=2,method=multistep"
    assert [rmse(dpm, n, 1, 0.999) for n in (8, 10)] == pytest.approx([0.0305, 0.0905], rel=5e-3)
    assert rmse(dpm + ",lower_order_final=false", 8, 1, 0.999) == pytest.approx(0.169, rel=5e-3)


def test_every_solver_runs_on_a_flow_model_or_refuses_in_one_line() -> None:
    """From t_start = 0.999 on the logSNR grid every solver runs (the VP-only accelerated samplers refuse, saying
    so); from pure noise (t = 1, time-uniform grid) only those that start there run, the others refuse naming them."""
    from dpmbench.solvers.registry import get_solver, list_solvers

    m = load_model("gmm-2d-flow")
    x_T = m.prior(8, seed=0, dtype=torch.float64)
    starts_at_noise = []
    for name in list_solvers():
        sol = get_solver(name)
        nfe = max(sol.min_nfe(), 12)
        if name.startswith("accel-"):
            with pytest.raises(DpmbenchError, match="needs a variance-preserving schedule"):
                sample(m, name, nfe, x_T, t_start=0.999)
            continue
        assert torch.isfinite(sample(m, name, nfe, x_T, t_start=0.999)).all(), name
        if sol.pure_noise_start:
            starts_at_noise.append(name)
            assert torch.isfinite(sample(m, name, nfe, x_T, schedule="time-uniform")).all(), name
        else:
            with pytest.raises(DpmbenchError, match=r"it is pure noise .*flow-euler") as exc:
                sample(m, name, nfe, x_T, schedule="time-uniform")
            assert "\n" not in str(exc.value)
    assert starts_at_noise == ["ddim", "flow-euler", "flow-heun"]


def test_the_command_line_starts_a_solver_below_pure_noise(tmp_path, capsys: pytest.CaptureFixture) -> None:  # noqa: ANN001
    """``dpmbench sample --t-start``: DPM-Solver++ on a flow model refuses t = 1 in one line (exit 2, no file) and
    runs from 0.999, the start recorded in the samples file; the samples equal ``dpmbench.sample``'s."""
    from support import run_cli

    out = tmp_path / "s.npz"
    args = ["sample", "--model", "gmm-2d-flow", "--solver", "dpm-solver++", "--nfe", "10", "--num-samples", "16",
            "--seed", "0", "--schedule", "flow-shift:3", "--out", str(out)]
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and err.count("\n") == 1 and "it is pure noise" in err and not out.exists()
    code, _, err = run_cli(capsys, *args, "--t-start", "0.999")
    assert code == 0, err
    with np.load(out) as f:
        assert float(f["t_start"]) == 0.999
        m = load_model("gmm-2d-flow")
        want = sample(m, "dpm-solver++", 10, m.prior(16, seed=0), schedule="flow-shift:3", t_start=0.999)
        assert np.array_equal(f["x"], want.numpy())
    # the exact reference from the same start; the evaluation refuses a reference from another start
    ref, ref1, js = tmp_path / "ref.npz", tmp_path / "ref1.npz", tmp_path / "m.json"
    common = ["--model", "gmm-2d-flow", "--num-samples", "16", "--seed", "0"]
    assert run_cli(capsys, "reference", *common, "--t-start", "0.999", "--out", str(ref))[0] == 0
    assert run_cli(capsys, "reference", *common, "--out", str(ref1))[0] == 0
    with np.load(ref) as f, np.load(ref1) as f1:
        assert float(f["t_start"]) == 0.999 and "t_start" not in f1
        exact = m.exact_solution(m.prior(16, seed=0, dtype=torch.float64), t_start=0.999).numpy()
        assert np.array_equal(f["x"], exact) and not np.array_equal(f1["x"], exact)
    code, _, err = run_cli(capsys, "evaluate", "--samples", str(out), "--metrics", "rmse_exact", "--reference",
                           str(ref), "--out", str(js))
    assert code == 0, err
    rmse = json.loads(js.read_text())["metrics"]["rmse_exact"]
    want = float(np.sqrt(np.mean((want.double().numpy() - exact) ** 2)))  # over samples and dimensions
    assert rmse == pytest.approx(want, rel=1e-6)  # against the exact solution from the samples' own start
    code, _, err = run_cli(capsys, "evaluate", "--samples", str(out), "--metrics", "rmse_exact", "--reference",
                           str(ref1), "--out", str(tmp_path / "m1.json"))
    assert code == 2 and err.count("\n") == 1 and "its t_start nan differs from the samples' 0.999" in err


def test_the_grid_starts_a_flow_model_where_its_solvers_can() -> None:
    """A flow model in a grid: solvers that cannot start at pure noise are refused in one line unless the model sets
    ``t_start`` below 1; its jobs then receive ``--t-start``."""
    from dpmbench.grid import build_grid

    base = {"metrics": ["rmse_exact"], "nfe": [6], "solvers": ["flow-euler", "dpm-solver++"], "t_end": 0.001}
    with pytest.raises(DpmbenchError, match=r"'solvers'.*'gmm-2d-flow' starts at pure noise.*dpm-solver\+\+ cannot "
                       r"start; allowed: solvers that start there \(ddim, flow-euler, flow-heun\), or set "
                       r"models.gmm-2d-flow.t_start below 1") as info:
        build_grid({**base, "models": {"gmm-2d-flow": {"num_samples": 4}}})
    assert "\n" not in str(info.value)
    g = build_grid({**base, "models": {"gmm-2d-flow": {"num_samples": 4, "t_start": 0.999}, "gmm-2d": {
        "num_samples": 4}}})  # a VP model starts anywhere: no t_start needed
    assert g.t_start_arg("gmm-2d-flow") == "--t-start 0.999" and g.t_start_arg("gmm-2d") == ""
    only_euler = build_grid({**base, "solvers": ["flow-euler", "flow-heun", "ddim"],
                             "models": {"gmm-2d-flow": {"num_samples": 4}}})
    assert only_euler.t_start_arg("gmm-2d-flow") == ""
    with pytest.raises(DpmbenchError, match=r"'models.gmm-2d-flow.t_start': 0.001 is not above the model's t_end"):
        build_grid({**base, "models": {"gmm-2d-flow": {"num_samples": 4, "t_start": 0.001}}})
