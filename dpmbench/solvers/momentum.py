"""Momentum samplers (Wizadwongsa, Chinchuthakun, Khungurn, Raj & Suwajanakorn 2024, 'Diffusion Sampling with
Momentum for Mitigating Divergence Artifacts', ICLR 2024; official code github.com/sWizad/momentum-diffusion,
``stable_diffusion/diffusion/momentum_scheduler.py``).

All three run on the "transfer" form of the probability-flow ODE in rho = sigma / alpha (PNDM's phi, see
dpmbench/solvers/pndm.py) or, for DPM-Solver++, its exponential-integrator form, and damp the step direction with
a momentum coefficient beta in (0, 1]; beta = 1 is the base solver.

* ``plms-hb``: PLMS (Adams-Bashforth of order k on the eps values, lower-order warm-up: ``ipndm``) with Polyak's
  heavy ball on the AB combination (Sec. 4.1, eq. 9-10; official ``PLMSWithHBScheduler``):
  ``e'_n = sum_j b_j eps_{n-j}``, ``v_n = (1 - beta) v_{n-1} + beta e'_n`` (v_0 = eps_0),
  ``x_{n+1} = alpha_{n+1} (x_n / alpha_n + (rho_{n+1} - rho_n) v_n)``.
* ``ghvb``: generalized heavy ball (Sec. 4.2, eq. 12-14; official ``GHVBScheduler``): the momentum acts on the raw
  eps, ``v_n = (1 - beta) v_{n-1} + beta eps_n``, and an Adams-Bashforth-like combination with beta-dependent
  weights of the last k velocities drives the step, ``x_{n+1} = alpha_{n+1} (x_n / alpha_n + drho sum_j c_j(beta)
  v_{n-j})``; for beta = 1 the weights are the AB ones.
* ``dpm-solver++-hb``: DPM-Solver++(2M) with heavy ball on its data-prediction combination
  ``D_n = x0_n + (x0_n - x0_{n-1}) / (2 r_n)`` (official ``MomentumDPMSolverMultistepScheduler``, dpmsolver++ /
  midpoint only): ``v_n = (1 - beta) v_{n-1} + beta D_n`` (v = D at the first second-order step),
  ``x_{n+1} = (sigma_{n+1}/sigma_n) x_n - alpha_{n+1} (e^{-h} - 1) v_n``; first-order steps (warm-up, and the
  final steps with ``lower_order_final``) are plain, as in the official scheduler.

The official code passes order and beta as one number ("order 3.8" = order 4, beta 0.8); here they are two
options. Default beta 0.8: the official experiments' value (DiT/run_dit_experiment.sh orders 3.8 / 3.9,
stable_diffusion/configs/magnitude_score/{hb,ghvb}.yml 3.8).
"""

from __future__ import annotations

import torch

from dpmbench.errors import DpmbenchError
from dpmbench.models.base import NFECounter
from dpmbench.solvers.base import History, MultistepSolver, Option, Plan, Point, expm1, register
from dpmbench.solvers.dpm_solver import DPMSolverPP
from dpmbench.solvers.pndm import AB_FIXED, _rho


def ghvb_coefficients(order: int, beta: float) -> tuple[float, ...]:
    """GHVB weights c_j(beta) of the last ``order`` velocities, newest first (paper eq. 14; official AdamBmixer
    divided by beta). beta = 1 gives the Adams-Bashforth weights; they always sum to 1."""
    b = beta
    if order == 1:
        w: tuple[float, ...] = (b,)
    elif order == 2:
        w = ((2 + b) / 2, -(2 - b) / 2)
    elif order == 3:
        w = ((18 + 5 * b) / 12, -(24 - 8 * b) / 12, (6 - b) / 12)
    elif order == 4:
        w = ((46 + 9 * b) / 24, -(78 - 19 * b) / 24, (42 - 5 * b) / 24, -(10 - b) / 24)
    else:
        raise DpmbenchError(f"invalid order {order} for GHVB: allowed 1, 2, 3, 4")
    return tuple(c / b for c in w)


def _momentum_option() -> Option:
    return Option(float, 0.8, "momentum beta in (0, 1]; 1 = the base solver (official experiments: 0.8, 'order "
                  "3.8')", minimum=0.0)


class _VelocityHistory(History):
    """A momentum run's history and its velocity state: ``vel`` the heavy-ball velocity, ``vels`` GHVB's past
    velocities (newest last)."""

    def __init__(self, size: int, model: NFECounter, plan: Plan):
        super().__init__(size, model, plan)
        self.vel: torch.Tensor | None = None
        self.vels: list[torch.Tensor] = []


def _velocity_history(solver: MultistepSolver, model: NFECounter, plan: Plan, size: int | None) -> History:
    return _VelocityHistory(solver.history_size() if size is None else size, model, plan)


class _PLMSMomentum(MultistepSolver):
    """PLMS in rho (fixed equal-step AB weights, lower-order warm-up, one NFE per step) with a momentum state."""

    prediction = "eps"
    order: int
    momentum: float
    options = {
        "order": Option(int, 4, "Adams-Bashforth order k (official experiments: 4)", choices=(1, 2, 3, 4)),
        "momentum": _momentum_option(),
    }

    def validate(self) -> None:
        if not 0.0 < self.momentum <= 1.0:
            raise DpmbenchError(f"invalid option 'momentum' of solver {self.name!r}: {self.momentum}; allowed: "
                                "0 < beta <= 1")

    def min_nfe(self) -> int:
        return 1

    def new_history(self, model: NFECounter, plan: Plan, size: int | None = None) -> History:
        return _velocity_history(self, model, plan, size)

    def direction(self, hist: History, order: int) -> torch.Tensor:
        """The eps-like direction the transfer step uses."""
        raise NotImplementedError

    def update(self, x: torch.Tensor, hist: History, t: Point, order: int) -> torch.Tensor:
        s = hist[-1].point
        return t.alpha * (x / s.alpha + (_rho(t) - _rho(s)) * self.direction(hist, order))  # PNDM eq. 9 (transfer)


@register
class PLMSHeavyBall(_PLMSMomentum):
    """PLMS with Polyak's heavy-ball momentum on the Adams-Bashforth combination."""

    name = "plms-hb"
    summary = "PLMS (iPNDM) with Polyak heavy-ball momentum beta (1 = ipndm); mitigates divergence artifacts"
    source = ("Wizadwongsa et al. 2024, 'Diffusion Sampling with Momentum for Mitigating Divergence Artifacts' "
              "(ICLR), Sec. 4.1 eq. 9-10 (PLMS with HB); official PLMSWithHBScheduler")

    def direction(self, hist: History, order: int) -> torch.Tensor:
        assert isinstance(hist, _VelocityHistory)
        prime = sum(c * hist[-1 - j].out for j, c in enumerate(AB_FIXED[order]))  # AB combination, eq. 9
        if hist.vel is None:
            hist.vel = hist[-1].out  # v_0 = eps_0 (official: vel initialised to the first model output)
        hist.vel = (1.0 - self.momentum) * hist.vel + self.momentum * prime  # heavy ball, eq. 10
        return hist.vel


@register
class GHVB(_PLMSMomentum):
    """Generalized heavy ball: momentum on eps, then beta-dependent Adams-Bashforth-like weights."""

    name = "ghvb"
    summary = "GHVB: generalized heavy-ball PLMS of order k with momentum beta (1 = ipndm)"
    source = ("Wizadwongsa et al. 2024, 'Diffusion Sampling with Momentum for Mitigating Divergence Artifacts' "
              "(ICLR), Sec. 4.2 eq. 12-14 (GHVB); official GHVBScheduler / AdamBmixer")

    def direction(self, hist: History, order: int) -> torch.Tensor:
        assert isinstance(hist, _VelocityHistory)
        eps = hist[-1].out
        hist.vel = eps if hist.vel is None else (1.0 - self.momentum) * hist.vel + self.momentum * eps  # eq. 12
        hist.vels.append(hist.vel)
        del hist.vels[:-4]
        k = min(order, len(hist.vels))
        coef = ghvb_coefficients(k, self.momentum)
        return sum(c * hist.vels[-1 - j] for j, c in enumerate(coef))  # eq. 14


@register
class DPMSolverPPHeavyBall(DPMSolverPP):
    """DPM-Solver++(2M) with Polyak's heavy-ball momentum on its second-order data-prediction combination."""

    name = "dpm-solver++-hb"
    summary = "DPM-Solver++(2M) with heavy-ball momentum beta (1 = dpm-solver++ 2M)"
    source = ("Wizadwongsa et al. 2024, 'Diffusion Sampling with Momentum for Mitigating Divergence Artifacts' "
              "(ICLR), Sec. 4.1 (HB on DPM-Solver++); official MomentumDPMSolverMultistepScheduler "
              "(dpmsolver++, midpoint); update Lu et al. 2022b Alg. 2")
    momentum: float
    options = {**DPMSolverPP.options, "momentum": _momentum_option()}

    def validate(self) -> None:
        super().validate()
        if not 0.0 < self.momentum <= 1.0:
            raise DpmbenchError(f"invalid option 'momentum' of solver {self.name!r}: {self.momentum}; allowed: "
                                "0 < beta <= 1")
        wrong = [(k, v, a) for k, v, a in (("method", self.method, "multistep"), ("order", self.order, 2),
                                           ("solver_type", self.solver_type, "dpmsolver"),
                                           ("corrector", self.corrector, "none"), ("sde", self.sde, False))
                 if v != a]
        if wrong:
            k, v, a = wrong[0]
            raise DpmbenchError(f"invalid option {k!r} of solver {self.name!r}: {v}; allowed: {a} (the official "
                                "momentum DPM-Solver++ is 2M, midpoint only)")

    def new_history(self, model: NFECounter, plan: Plan, size: int | None = None) -> History:
        return _velocity_history(self, model, plan, size)

    def multistep_second(self, x: torch.Tensor, hist: History, t: Point) -> torch.Tensor:
        assert isinstance(hist, _VelocityHistory)
        h, d1, _ = self._differences(hist, t, 2)
        s, m0 = hist[-1].point, hist[-1].out
        d = m0 + 0.5 * d1  # Alg. 2: D = x0_{i-1} + (x0_{i-1} - x0_{i-2}) / (2 r)
        hist.vel = d if hist.vel is None else (1.0 - self.momentum) * hist.vel + self.momentum * d  # heavy ball
        return (t.sigma / s.sigma) * x - t.alpha * expm1(-h) * hist.vel
