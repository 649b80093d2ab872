"""DPM-Solver-v3 (Zheng, Lu, Chen & Zhu, NeurIPS 2023, "DPM-Solver-v3: Improved Diffusion ODE Solver with
Empirical Model Statistics"; official code github.com/thu-ml/DPM-Solver-v3, ``dpm_solver_v3.py``).

The probability-flow ODE in lambda = log(alpha/sigma), dx/dlambda = (dlog alpha/dlambda) x - sigma eps_theta, is
rewritten with three *empirical model statistics* (EMS) l_lambda (scalar), s_lambda (scalar) and b_lambda
(data-shaped) (paper Sec. 3.1, eqs. (5)-(7)):

* N_theta(x, lambda) = sigma eps_theta - l x and f_theta = N_theta / alpha = (1 - l) x / alpha - x0_theta, so that
  ``x_t / alpha_t = e^{-(L_t - L_s)} x_s / alpha_s - int_s^t e^{-(L_t - L_r)} f_theta(x_r, r) dr`` with L = int l;
* the change of parameterization g_theta(x, lambda) = e^{-(S_lambda - S_s)} f_theta - beta_s(lambda),
  beta_s(lambda) = int_s^lambda e^{-(S_r - S_s)} b_r dr, S = int s, which the solver expands in a Taylor series
  around lambda_s (eq. (8), Algorithm 1 "local approximation"):

  ``x_t = (alpha_t/alpha_s) e^{-(L_t - L_s)} x_s - alpha_t [ sum_n c_n g^(n)(lambda_s) + c_b ]``,
  ``c_n = int_s^t e^{-(L_t - L_r) + S_r - S_s} (r - lambda_s)^n / n! dr``,  ``c_b = int_s^t e^{...} beta_s(r) dr``.

The EMS (paper eqs. (9)-(10), App. C.1.1) minimize the first-order discretization error:
``l* = argmin_l E ||grad_x N_theta||_F^2 = 1 - alpha E[tr grad_x x0_theta] / D`` and
``(s*, b*) = argmin E || f_theta^(1) - s f_theta - b ||^2``, a least-squares fit of the total derivative of f_theta
along the ODE trajectory: ``s = Cov(f^(1), f) / Var(f)``, ``b = E f^(1) - s E f``. Here they are estimated on K
trajectories of a high-step DPM-Solver++(2M) run from x_T ~ prior (the official code's "high-NFE sampler
trajectory"), on a uniform lambda grid of ``ems_steps`` intervals between t_start and t_end, with forward-mode
automatic differentiation (JVPs) of the data prediction: the trace by Hutchinson's estimator with one Rademacher
probe per sample, f^(1) = -l' x/alpha + (1 - l)(x0 - x/alpha) - d x0/dlambda with d x0/dlambda the JVP along
(dx/dlambda, 1) and l' from the lambda grid (second-order differences). They are deterministic given ``ems_seed``
and cached as an artifact (``dpm-solver-v3-ems``) per (model, guidance, t range, K, grid, seed). Defaults K = 256,
64 intervals (official: 1024-4096 samples, 120-1200 intervals): 5-35 s on 2 CPU cores for the oracle models.
The estimate runs in float64 on the CPU (the oracle track); with class labels but no guidance the EMS are those of
the unconditional model. Its one-trajectory-batch JVPs use torch's forward-mode AD, so the model must be
differentiable in x and t (the oracle models are).

Integrals: l, s, b are piecewise linear in lambda between the EMS grid points (the official code keeps them on
the grid and integrates by the trapezoid rule, moving the step points to the nearest grid point); here L and S are
exact (trapezoid of a piecewise-linear function) and c_n, c_b, beta by composite 8-point Gauss-Legendre on every
grid interval inside a step, so the sampling grid is used as requested and, with l = 1, s = b = 0 (the official
``degenerated`` EMS), the updates are DPM-Solver++'s in closed form to round-off.

Multistep predictor / corrector (paper Sec. 3.3-3.4, Algorithm 2; official ``multistep_predictor_update``,
``multistep_corrector_update``, ``sample``): the predictor of order p uses the p newest points, the derivatives
g^(1..p-1) at lambda_s from the polynomial through them (``pseudo``: the official pseudo-order variant takes
i! times the i-th Newton divided difference instead, a small-NFE trick); the corrector refines the predicted x_t
with the model output evaluated there (no extra NFE, UniC-style), with the points (s, t, older ...), of order p
(``corrector_pseudo=false``) or pseudo-order p + 1 (``corrector_pseudo=true``), keeping N_theta (i.e. f_theta) at
t unchanged. With l = 1, s = b = 0 the predictor is DPM-Solver++ multistep with Taylor coefficients
(``dpm-solver++:solver_type=taylor,order3_rule=taylor``) and the full corrector (p + 1 points, exact polynomial)
is UniC-p of UniPC (data prediction, p >= 2): tests/test_dpm_solver_v3.py checks both to ~1e-12.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, ClassVar

import numpy as np
import torch
import torch.autograd.forward_ad as fwad

from dpmbench.artifacts import artifact_key, cached, code_version, fit_samples_max
from dpmbench.errors import DpmbenchError
from dpmbench.models.base import Model, NFECounter, fit_prior, fit_stream
from dpmbench.schedules import NoiseSchedule
from dpmbench.solvers.base import Context, History, MultistepSolver, Option, Plan, Point, register

EMS_KIND = "dpm-solver-v3-ems"
EMS_VERSION = 1  # bump when the estimator changes (part of the artifact key)
_GL_XI, _GL_W = (torch.tensor(v, dtype=torch.float64) for v in np.polynomial.legendre.leggauss(8))


# -- empirical model statistics --------------------------------------------------------------------------------
def _dlog_alpha_dlambda(schedule: NoiseSchedule, lams: torch.Tensor) -> torch.Tensor:
    """d log alpha / d lambda at ``lams`` (forward-mode AD through t(lambda))."""
    with fwad.dual_level():
        lam = fwad.make_dual(lams.clone(), torch.ones_like(lams))
        out = schedule.log_alpha(schedule.t_of_lambda(lam))
        return fwad.unpack_dual(out).tangent.detach().clone()


FD_STEP = 1e-3  # finite-difference JVPs: the per-sample RMS size of the perturbation


def x0_jvps(model: Model, x: torch.Tensor, lam: float, v: torch.Tensor, z: torch.Tensor, cond: Any = None,
            cond2: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two JVPs of the data prediction x0(x, t(lambda)) in one batched forward-mode pass: the total derivative
    along (dx, dlambda) = (v, 1), and the Jacobian-vector product (grad_x x0) z (``cond2``: labels of both halves).

    Networks with operations that have no forward-mode derivative (e.g. PyTorch's fused CPU attention in diffusers
    UNets) get central finite differences instead (``x0_jvps_fd``)."""
    if cond is not None and cond2 is None:
        cond2 = _cat_cond(cond)
    if getattr(model, "forward_ad", True):
        try:
            return _x0_jvps_ad(model, x, lam, v, z, cond2)
        except NotImplementedError:
            model.forward_ad = False  # remembered: later calls go straight to finite differences
    return x0_jvps_fd(model, x, lam, v, z, cond2)


def _cat_cond(cond: Any) -> Any:
    if isinstance(cond, (list, tuple)):
        return [*cond, *cond]
    return torch.cat([torch.as_tensor(cond), torch.as_tensor(cond)])


def x0_jvps_fd(model: Model, x: torch.Tensor, lam: float, v: torch.Tensor, z: torch.Tensor, cond2: Any = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``x0_jvps`` by central differences (one batched evaluation of 4n rows), the step per sample chosen so that
    the perturbation has RMS size ``FD_STEP``."""
    n = x.shape[0]
    dirs = torch.cat([v, z])
    step = FD_STEP / dirs.reshape(2 * n, -1).pow(2).mean(1).sqrt().clamp_min(1e-12)
    dlam = torch.cat([torch.ones(n), torch.zeros(n)]).to(torch.float64).to(x.device)
    e = step.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    xx = torch.cat([torch.cat([x, x]) + e * dirs, torch.cat([x, x]) - e * dirs])
    lam_vec = torch.cat([lam + step * dlam, lam - step * dlam])
    c4 = None if cond2 is None else _cat_cond(cond2)
    out = model.x0(xx, model.schedule.t_of_lambda(lam_vec), c4)
    d = (out[: 2 * n] - out[2 * n:]) / (2 * e)
    return d[:n], d[n:]


def _x0_jvps_ad(model: Model, x: torch.Tensor, lam: float, v: torch.Tensor, z: torch.Tensor, cond2: Any
                ) -> tuple[torch.Tensor, torch.Tensor]:
    n = x.shape[0]
    with fwad.dual_level():
        lam_vec = fwad.make_dual(torch.full((2 * n,), lam, dtype=torch.float64, device=x.device),
                                 torch.cat([torch.ones(n), torch.zeros(n)]).to(torch.float64).to(x.device))
        xd = fwad.make_dual(torch.cat([x, x]), torch.cat([v, z]))
        out = model.x0(xd, model.schedule.t_of_lambda(lam_vec), cond2)
        tangent = fwad.unpack_dual(out).tangent.detach().clone()
    return tangent[:n], tangent[n:]


def compute_ems(model: Model, t_start: float, t_end: float, steps: int, samples: int, seed: int,
                conditional: Any, device: str | torch.device = "cpu") -> dict[str, Any]:
    """See ``_compute_ems``; runs on one intra-op thread (small batches: threads only add contention, measured
    4x slower with 2 threads on a loaded 2-core machine), restoring the thread count afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with model.fixed_batch():  # every evaluation is on the EMS trajectories: no padded chunks needed
            return _compute_ems(model, t_start, t_end, steps, samples, seed, conditional, device)
    finally:
        torch.set_num_threads(threads)


def _compute_ems(model: Model, t_start: float, t_end: float, steps: int, samples: int, seed: int,
                 conditional: Any, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Estimate the EMS l, s, b (paper eqs. (9)-(10)) on ``steps + 1`` points uniform in lambda from t_start to
    t_end, with ``samples`` trajectories from x_T = fit_prior(model, samples, seed) (``conditional``: True for the
    labels model.labels(), False for none, or the conditioning itself, e.g. the prompts of a text model). Returns
    JSON-able lists: ``lam`` (increasing), ``l``, ``s``, ``b`` (one flattened data-sized row per lambda) and the
    wall time."""
    start = time.perf_counter()
    sch = model.schedule
    lams = torch.linspace(sch.lambda_(t_start), sch.lambda_(t_end), steps + 1, dtype=torch.float64)
    ts = sch.t_of_lambda(lams)
    dla = _dlog_alpha_dlambda(sch, lams)
    x = fit_prior(model, samples, seed, device=device)  # samples FIT_START .. of the stream: never evaluated
    cond = (model.labels(samples) if conditional else None) if isinstance(conditional, bool) else conditional
    cond2 = None if cond is None else _cat_cond(cond)
    dim = x[0].numel()
    gen = torch.Generator().manual_seed(int(seed) + 1)
    l_list: list[float] = []
    mom: dict[str, list[Any]] = {k: [] for k in ("u", "y", "f", "cuf", "cyf", "vff")}
    x0_prev: torch.Tensor | None = None
    for i in range(steps + 1):
        t, lam = float(ts[i]), lams[i]
        alpha, sigma = sch.alpha(t), sch.sigma(t)
        x0 = model.x0(x, t, cond)
        v = dla[i] * x - (x - alpha * x0)  # dx/dlambda = (dlog alpha/dlambda) x - sigma eps
        z = (torch.randint(0, 2, x.shape, generator=gen, dtype=torch.float64) * 2.0 - 1.0).to(x.device)  # Rademacher
        dx0, jz = x0_jvps(model, x, float(lam), v, z, cond, cond2)
        dx0, jz = dx0.reshape(samples, -1), jz.reshape(samples, -1)
        l_i = 1.0 - alpha * float((z.reshape(samples, -1) * jz).sum(1).mean()) / dim  # eq. (9), Hutchinson
        y, xf = (x / alpha).reshape(samples, -1), x0.reshape(samples, -1)
        f = (1.0 - l_i) * y - xf
        u = (1.0 - l_i) * (xf - y) - dx0  # f^(1) without its -l' y term (l' is known after the sweep)
        u_mean, y_mean, f_mean = u.mean(0), y.mean(0), f.mean(0)  # each once (bit-identical to recomputing them)
        fc = f - f_mean
        mom["u"].append(u_mean)
        mom["y"].append(y_mean)
        mom["f"].append(f_mean)
        mom["cuf"].append(float(((u - u_mean) * fc).sum(1).mean()))
        mom["cyf"].append(float(((y - y_mean) * fc).sum(1).mean()))
        mom["vff"].append(float((fc * fc).sum(1).mean()))
        l_list.append(l_i)
        if i < steps:  # DPM-Solver++ (2M after a first-order step) to the next grid point
            h = float(lams[i + 1] - lams[i])
            d = x0 if x0_prev is None else x0 + 0.5 * (x0 - x0_prev)
            t_next = float(ts[i + 1])
            x = (sch.sigma(t_next) / sigma) * x - sch.alpha(t_next) * math.expm1(-h) * d
            x0_prev = x0
    lam_np = lams.numpy()
    l_arr = np.array(l_list)
    dl = np.gradient(l_arr, lam_np, edge_order=2)
    vff = np.array(mom["vff"])
    scale = np.array([float((fm * fm).sum()) for fm in mom["f"]]) + vff  # E ||f||^2 (~ ||E f||^2 + Var f)
    # eq. (10); where f does not vary over the samples at all (Var f at the round-off of E||f||^2, e.g. an isotropic
    # Gaussian, where f = -l mu) s is not identifiable: 0. Note: at high noise Var f << E||f||^2 and s is noisy for
    # small K (measured: s ~ 1e3 at lambda_T with K = 16, 8 intervals, which overflows e^S; K >= 64 is safe).
    ok = vff > 1e-12 * scale
    s_arr = np.where(ok, (np.array(mom["cuf"]) - dl * np.array(mom["cyf"])) / np.where(ok, vff, 1.0), 0.0)
    u_m, y_m, f_m = (torch.stack(mom[k]).cpu().numpy() for k in ("u", "y", "f"))
    b_arr = u_m - dl[:, None] * y_m - s_arr[:, None] * f_m
    # b is data-sized ((N + 1) x D: 98.5M numbers for ADM-256 at N = 500): an array, stored beside the artifact's JSON
    return {"lam": lam_np.tolist(), "l": l_arr.tolist(), "s": s_arr.tolist(), "b": np.ascontiguousarray(b_arr),
            "wall_s": time.perf_counter() - start}


class EMS:
    """The EMS as piecewise-linear functions of lambda and the integrals of the DPM-Solver-v3 updates."""

    def __init__(self, lam: Any, l: Any, s: Any, b: Any):
        self.lam = torch.as_tensor(lam, dtype=torch.float64)
        self.l = torch.as_tensor(l, dtype=torch.float64)
        self.s = torch.as_tensor(s, dtype=torch.float64)
        self.b = torch.as_tensor(b, dtype=torch.float64).reshape(len(self.lam), -1)
        if len(self.lam) < 2 or not bool((self.lam[1:] > self.lam[:-1]).all()):
            raise DpmbenchError("invalid EMS grid: lambda must be strictly increasing with >= 2 points")
        dlam = self.lam[1:] - self.lam[:-1]
        zero = torch.zeros(1, dtype=torch.float64)
        self.L = torch.cat([zero, torch.cumsum(0.5 * dlam * (self.l[1:] + self.l[:-1]), 0)])  # exact (linear l)
        self.S = torch.cat([zero, torch.cumsum(0.5 * dlam * (self.s[1:] + self.s[:-1]), 0)])
        self._memo: dict[Any, Any] = {}
        self._lam_np = self.lam.numpy()

    # piecewise-linear values and their exact integrals L, S
    def _locate(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        uc = u.clamp(float(self.lam[0]), float(self.lam[-1]))
        idx = np.searchsorted(self._lam_np, uc.detach().cpu().numpy(), side="right") - 1  # numpy: far cheaper here
        k = torch.from_numpy(np.clip(idx, 0, len(self._lam_np) - 2))
        w = (uc - self.lam[k]) / (self.lam[k + 1] - self.lam[k])
        return uc, k, w

    def _value(self, v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        _, k, w = self._locate(u)
        if v.ndim == 1:
            return v[k] + w * (v[k + 1] - v[k])
        return v[k] + w[..., None] * (v[k + 1] - v[k])

    def _integral(self, cum: torch.Tensor, v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        uc, k, _ = self._locate(u)
        vu = self._value(v, uc)
        return cum[k] + 0.5 * (uc - self.lam[k]) * (v[k] + vu) + vu * (u - uc)  # constant beyond the grid

    def l_at(self, lam: float) -> float:
        """l at ``lam``."""
        return float(self._value(self.l, torch.tensor([lam], dtype=torch.float64))[0])

    def big_l(self, u: torch.Tensor) -> torch.Tensor:
        """L(u) = int l (from the first grid point)."""
        return self._integral(self.L, self.l, u)

    def big_s(self, u: torch.Tensor) -> torch.Tensor:
        """S(u) = int s."""
        return self._integral(self.S, self.s, u)

    def _pieces(self, a: float, c: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gauss-Legendre nodes/weights of int_a^c over the grid intervals (signed if c < a): piece starts (P,),
        nodes (P, 8) and weights (P, 8)."""
        lo, hi = min(a, c), max(a, c)
        inner = self.lam[(self.lam > lo) & (self.lam < hi)]
        br = torch.cat([torch.tensor([lo], dtype=torch.float64), inner, torch.tensor([hi], dtype=torch.float64)])
        if c < a:
            br = br.flip(0)
        p0, half = br[:-1], 0.5 * (br[1:] - br[:-1])
        return p0, p0[:, None] + half[:, None] * (_GL_XI[None] + 1.0), half[:, None] * _GL_W[None]

    def _weighted_b(self, a: float, u: torch.Tensor) -> torch.Tensor:
        """e^{-(S_u - S_a)} b_u (rows of data size)."""
        sa = self.big_s(torch.tensor([a], dtype=torch.float64))[0]
        return torch.exp(-(self.big_s(u) - sa))[..., None] * self._value(self.b, u)

    def beta(self, a: float, c: float) -> torch.Tensor:
        """beta_a(c) = int_a^c e^{-(S_r - S_a)} b_r dr (data-sized, flattened)."""
        key = ("beta", a, c)
        if key not in self._memo:
            if a == c:
                self._memo[key] = torch.zeros(self.b.shape[1], dtype=torch.float64)
            else:
                _, u, w = self._pieces(a, c)
                self._memo[key] = (w[..., None] * self._weighted_b(a, u)).sum((0, 1))
        return self._memo[key]

    def coefficients(self, a: float, c: float, n: int) -> tuple[float, list[float], torch.Tensor]:
        """For a step from lambda_s = a to lambda_t = c: e^{-(L_t - L_s)}, c_0..c_{n-1} and c_b (Algorithm 1)."""
        key = ("coef", a, c, n)
        if key not in self._memo:
            p0, u, w = self._pieces(a, c)
            ta, tc = torch.tensor([a], dtype=torch.float64), torch.tensor([c], dtype=torch.float64)
            la, lc, sa = self.big_l(ta)[0], self.big_l(tc)[0], self.big_s(ta)[0]
            e = torch.exp(-(lc - self.big_l(u)) + self.big_s(u) - sa)  # e^{-(L_t - L_r) + S_r - S_s}
            cs = [float((w * e * (u - a) ** k).sum()) / math.factorial(k) for k in range(n)]
            # beta_a(u) at every node: full earlier pieces + the partial piece (nested Gauss-Legendre)
            full = (w[..., None] * self._weighted_b(a, u)).sum(1)  # (P, D)
            before = torch.cumsum(full, 0) - full
            half = 0.5 * (u - p0[:, None])  # (P, 8)
            v = p0[:, None, None] + half[..., None] * (_GL_XI + 1.0)  # (P, 8, 8)
            part = ((half[..., None] * _GL_W)[..., None] * self._weighted_b(a, v)).sum(2)  # (P, 8, D)
            beta_u = before[:, None, :] + part
            c_b = ((w * e)[..., None] * beta_u).sum((0, 1))
            self._memo[key] = (float(torch.exp(-(lc - la))), cs, c_b)
        return self._memo[key]


def taylor_weights(lams: list[float], pseudo: bool) -> np.ndarray:
    """Weights W (n-1, n) with a_i = sum_k W[i-1, k] g_k, the i-th Taylor coefficient g^(i)/i! at lams[0] of the
    polynomial through (lams[k], g_k) (official ``compute_high_order_derivatives``, pseudo=False: solve the
    Vandermonde system), or with ``pseudo`` the i-th Newton divided difference (official pseudo=True)."""
    n = len(lams)
    eye = np.eye(n)
    if pseudo:
        table = [list(eye)]
        for i in range(1, n):
            table.append([(table[i - 1][j] - table[i - 1][j + 1]) / (lams[j] - lams[i + j]) for j in range(n - i)])
        return np.array([table[i][0] for i in range(1, n)])
    r = np.array([[(lams[k] - lams[0]) ** i for i in range(1, n)] for k in range(1, n)])
    diff = eye[1:] - eye[0][None]  # g_k - g_0
    return np.linalg.solve(r, diff)


# -- the solver ---------------------------------------------------------------------------------------------------
TRI = ("auto", "true", "false")
HALF = ("off", "high-noise", "low-noise")  # corrector_half: where the corrector runs


@register
class DPMSolverV3(MultistepSolver):
    """DPM-Solver-v3: multistep predictor (Algorithm 2) with EMS-based local approximation (Algorithm 1) and
    the corrector, one NFE per step; the EMS are computed (or read from the artifact cache) in ``prepare``."""

    name = "dpm-solver-v3"
    summary = "DPM-Solver-v3 (EMS l, s, b from the model; multistep predictor-corrector, orders 1-3)"
    source = ("Zheng et al. 2023, 'DPM-Solver-v3', eqs. (5)-(8) (change of parameterization, Algorithm 1), "
              "EMS eqs. (9)-(10) / App. C.1.1, Algorithm 2 (multistep predictor-corrector, pseudo-order); "
              "official code dpm_solver_v3.py")
    prediction = "f"  # the history holds f_theta = N_theta / alpha (see predict)
    needs_prepare: ClassVar[bool] = True
    lower_order_final_below: ClassVar[int] = sys.maxsize  # official: step order <= steps left, at any step count
    order: str
    predictor_pseudo: str
    corrector: bool
    corrector_pseudo: bool
    corrector_half: str
    lower_order_final: bool
    degenerated: bool
    ems_samples: int
    ems_steps: int
    ems_seed: int
    options = {
        "order": Option(str, "auto", "predictor order 1, 2, 3; auto: 3 unconditional, 2 with guidance (the official "
                        "README's recommendation, thu-ml/DPM-Solver-v3@ba16871:README.md:243; measured: order 3 is "
                        "unstable on gmm-digits at guidance 7.5)", choices=("auto", "1", "2", "3")),
        "predictor_pseudo": Option(str, "auto", "pseudo-order predictor (divided differences): auto = on at <= 5 "
                                   "steps (official CIFAR-10 scripts: thu-ml/DPM-Solver-v3@ba16871:codebases/edm/"
                                   "sample.py:170, codebases/score_sde/sample.sh:9-10), true, false", choices=TRI),
        "corrector": Option(bool, True, "corrector after every predictor step but the last, no extra NFE (official "
                            "use_corrector=True, thu-ml/DPM-Solver-v3@ba16871:README.md:236; its scripts switch it "
                            "off at some NFEs, e.g. codebases/edm/sample.py:171)"),
        "corrector_pseudo": Option(bool, False, "pseudo-order corrector of order p + 1 (divided differences over "
                                   "one more point) instead of order p (official c_pseudo; False in the CIFAR-10 "
                                   "scripts, thu-ml/DPM-Solver-v3@ba16871:codebases/edm/sample.py:172, "
                                   "codebases/score_sde/sample.sh:35; True in the LSUN / ImageNet / Stable Diffusion "
                                   "ones)"),
        "corrector_half": Option(str, "off", "half-corrector: correct only the points with t > 0.5 (high-noise, "
                                 "what the official code does: thu-ml/DPM-Solver-v3@ba16871:dpm_solver_v3.py:766) or "
                                 "t <= 0.5 (low-noise, what the paper's Sec. 3.3 and the README:253 say); t in the "
                                 "model's time variable (VP: [0, 1]); off = official half=False (dpm_solver_v3.py:749)",
                                 choices=HALF),
        "lower_order_final": Option(bool, True, "order of step i <= steps left, at every step count (official "
                                    "lower_order_final=True, thu-ml/DPM-Solver-v3@ba16871:README.md:238, "
                                    "dpm_solver_v3.py:781-782)"),
        "degenerated": Option(bool, False, "use l = 1, s = 0, b = 0 instead of the EMS (official 'degenerated'; "
                              "paper App. A.2: then DPM-Solver-v3 is DPM-Solver++ with Taylor coefficients)"),
        "ems_samples": Option(int, 256, "K, trajectories for the EMS (official 1024-4096: the statistics "
                              "directories ..._N_K of thu-ml/DPM-Solver-v3@ba16871:codebases/*/sample.sh, paper "
                              "Sec. 3.4; 256 keeps prepare at seconds on CPU for the oracle models)", minimum=2),
        "ems_steps": Option(int, 64, "N, intervals of the uniform-lambda EMS grid (official 120-1200: the "
                            "statistics directories ..._N_K of codebases/*/sample.sh, paper Sec. 3.4)", minimum=2),
        "ems_seed": Option(int, 0, "seed of the EMS trajectories (x_T) and trace probes"),
    }

    def validate(self) -> None:
        self._ems: EMS | None = None
        self._ems_for: Any = None
        self._guided = False

    def full_order(self) -> int:
        """The predictor order; ``auto`` is 2 for a guided run (known after ``prepare``), else 3."""
        if self.order == "auto":
            return 2 if self._guided else 3
        return int(self.order)

    def prepare(self, ctx: Context) -> dict[str, Any]:
        """Compute (or load) the EMS for the model, guidance and t range of ``ctx`` (cached artifact)."""
        self.check_start(Point.at(ctx.model.schedule, ctx.start))  # the EMS grid spans the log-SNR from the start
        cap = fit_samples_max()  # a rehearsal's cap: exactly the EMS of min(K, cap) samples, keyed by that count
        samples = self.ems_samples if cap is None else min(self.ems_samples, cap)
        items = (ctx.model.cache_key(), ctx.guidance, ctx.start, ctx.end, samples, self.ems_steps,
                 self.ems_seed, EMS_VERSION)
        items = (*items, ctx.prompts_id) if ctx.prompts_id else items  # a text model's prompts enter the key
        self._guided = ctx.guidance is not None
        summary: dict[str, Any] = {"degenerated": self.degenerated, "order": self.full_order()}
        if samples != self.ems_samples and not self.degenerated:
            summary.update(ems_samples=samples, ems_samples_requested=self.ems_samples, fit_samples_max=cap)
        if self.degenerated:
            sch = ctx.model.schedule
            key = ("degenerated", sch.lambda_(ctx.start), sch.lambda_(ctx.end), self.ems_steps)
            if self._ems_for != key:
                n = self.ems_steps + 1  # fine grid: short Gauss-Legendre pieces, integrals exact to round-off
                lam = torch.linspace(key[1], key[2], n, dtype=torch.float64)
                self._ems = EMS(lam, torch.ones(n), torch.zeros(n), torch.zeros(n, math.prod(ctx.model.shape)))
                self._ems_for = key
            return summary
        if self._ems_for != items:
            data = cached(EMS_KIND, items, lambda: compute_ems(
                ctx.model, ctx.start, ctx.end, self.ems_steps, samples, self.ems_seed,
                ctx.cond(samples), ctx.device), meta={"model": ctx.model.cache_key(), "guidance": ctx.guidance,
                                                      "t_start": ctx.start, "t_end": ctx.end, "samples": samples,
                                                      "steps": self.ems_steps, "seed": self.ems_seed,
                                                      "stream": fit_stream(self.ems_seed, samples)})
            self._ems, self._ems_for = EMS(data["lam"], data["l"], data["s"], data["b"]), items
            self._ems_wall = data.get("wall_s")
        key = artifact_key(EMS_KIND, *items, code_version(compute_ems))  # as cached() keys it
        return {**summary, "artifact": key[:32], "ems_wall_s": self._ems_wall}

    @property
    def ems(self) -> EMS:
        """The prepared EMS."""
        if self._ems is None:
            raise RuntimeError("dpm-solver-v3 needs prepare() (dpmbench.sample runs it) before solving")
        return self._ems

    def plan(self, nfe: int, schedule: NoiseSchedule, kind: Any = "logsnr",
             t_start: float | None = None, t_end: float | None = None) -> Plan:
        p = super().plan(nfe, schedule, kind, t_start, t_end)
        steps = len(p.orders)
        p.extra["predictor_pseudo"] = self.predictor_pseudo == "true" or (self.predictor_pseudo == "auto"
                                                                          and steps <= 5)
        return p

    def predict(self, model: NFECounter, x: torch.Tensor, p: Point, kind: str) -> torch.Tensor:
        """1 NFE. ``kind="f"``: f_theta = (sigma eps - l x) / alpha = (1 - l) x / alpha - x0 (paper eq. (5))."""
        if kind != "f":
            return super().predict(model, x, p, kind)
        x0 = super().predict(model, x, p, "x0")
        return (1.0 - self.ems.l_at(p.lam)) * x / p.alpha - x0

    def ems_update(self, x_s: torch.Tensor, s: Point, t: Point, points: list[Point], fs: list[torch.Tensor],
                   pseudo: bool) -> torch.Tensor:
        """x_t from x_s with the local approximation through ``points`` (points[0] = s) and their f_theta values
        (Algorithm 1, official multistep_predictor_update / multistep_corrector_update)."""
        ems = self.ems
        n = len(points)
        decay, cs, c_b = ems.coefficients(s.lam, t.lam, n)
        s_s = ems.big_s(torch.tensor([s.lam], dtype=torch.float64))[0]
        gs = [fs[0]]
        for p, f in zip(points[1:], fs[1:], strict=True):  # g_k = e^{-(S_k - S_s)} f_k - beta_s(lambda_k), eq. (7)
            s_k = ems.big_s(torch.tensor([p.lam], dtype=torch.float64))[0]
            beta = ems.beta(s.lam, p.lam).to(dtype=f.dtype, device=f.device).reshape(f.shape[1:])
            gs.append(float(torch.exp(-(s_k - s_s))) * f - beta)
        acc = cs[0] * gs[0] + c_b.to(dtype=x_s.dtype, device=x_s.device).reshape(x_s.shape[1:])
        if n > 1:
            w = taylor_weights([p.lam for p in points], pseudo)
            for i in range(1, n):  # c_i g^(i) = c_i i! a_i, with c_i holding 1/i!
                a_i = sum(float(w[i - 1, k]) * gs[k] for k in range(n) if w[i - 1, k] != 0.0)
                acc = acc + cs[i] * math.factorial(i) * a_i
        return (t.alpha / s.alpha) * decay * x_s - t.alpha * acc  # eq. (8)

    def update(self, x: torch.Tensor, hist: History, t: Point, order: int) -> torch.Tensor:
        recs = [hist[-(k + 1)] for k in range(order)]
        pseudo = bool(hist.plan.extra.get("predictor_pseudo", False))
        return self.ems_update(x, recs[0].point, t, [r.point for r in recs], [r.out for r in recs], pseudo)

    def corrects_at(self, s: Point) -> bool:
        """Whether the corrector refines the point ``s`` (``corrector_half``; official dpm_solver_v3.py:766
        corrects where ``t > 0.5 or not half``)."""
        if self.corrector_half == "high-noise":
            return s.t > 0.5
        if self.corrector_half == "low-noise":
            return s.t <= 0.5
        return True

    def correct(self, x_prev: torch.Tensor, x: torch.Tensor, hist: History, s: Point, out: torch.Tensor,
                order: int) -> torch.Tensor:
        """The corrector (official multistep_corrector_update): order p, or pseudo-order p + 1; points (s0, t,
        older ...). f_theta at t (``out``) is kept, as the official code keeps N_theta."""
        c_order = order + int(self.corrector_pseudo)
        if not self.corrector or c_order <= 1 or not self.corrects_at(s):
            return x
        recs = [hist[-1]] + [hist[-(k + 1)] for k in range(1, c_order - 1)]
        points = [recs[0].point, s, *[r.point for r in recs[1:]]]
        fs = [recs[0].out, out, *[r.out for r in recs[1:]]]
        return self.ems_update(x_prev, recs[0].point, s, points, fs, self.corrector_pseudo)
