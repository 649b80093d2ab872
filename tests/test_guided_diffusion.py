"""The ``guided-diffusion`` adapter (openai/guided-diffusion ADM UNet + noisy classifier, classifier guidance) on
state dicts of the real networks (``standins.guided_diffusion_pair``: the installed guided-diffusion code at 64 px),
checked against the official wrapper's formulas computed here directly on the same networks."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch
from standins import GD_TINY_CLASSIFIER_FLAGS, GD_TINY_FLAGS, guided_diffusion_pair, write_guided_diffusion_code

from dpmbench.errors import DpmbenchError
from dpmbench.models.adapters import load_adapter
from dpmbench.models.base import Guided, guided, has_exact_solution
from dpmbench.models.manifest import parse_entry
from dpmbench.schedules import VPDiscrete
from dpmbench.solvers import dpm_solver_v3


@pytest.fixture(scope="module")
def adm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    folder = tmp_path_factory.mktemp("adm")
    net, clf = guided_diffusion_pair(folder)
    return folder, net, clf


def _entry(folder: Path, **opts: Any) -> dict[str, Any]:
    files = [{"path": p.name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
             for p in sorted(folder.glob("*.pt"))]
    options = {"model_file": "unet.pt", "classifier_file": "classifier.pt", "model_flags": dict(GD_TINY_FLAGS),
               "classifier_flags": dict(GD_TINY_CLASSIFIER_FLAGS), "micro_batch": 0, **opts}
    return {"id": "tiny-adm", "adapter": "guided-diffusion", "schedule": "vp-discrete", "parameterization": "eps",
            "resolution": 64, "conditioning": "class", "num_classes": 1000, "files": files, "options": options}


def test_eps_and_classifier_guidance_follow_the_official_wrapper(adm: tuple[Path, Any, Any]) -> None:
    folder, net, clf = adm
    model = load_adapter(_entry(folder), folder)
    assert (model.shape, model.schedule.kind, model.schedule.N, model.num_classes) == ((3, 64, 64), "vp-discrete",
                                                                                        1000, 1000)
    ref = VPDiscrete(beta_start=1e-4, beta_end=0.02)  # guided-diffusion's linear betas at N = 1000
    assert torch.equal(model.schedule.log_alpha_array, ref.log_alpha_array)
    torch.manual_seed(0)
    x, y, t = torch.randn(3, 3, 64, 64), torch.tensor([5, 999, 0]), 0.4
    t_in = torch.full((3,), (t - 1 / 1000) * 1000).float()  # the official get_model_input_time
    assert torch.allclose(model.timesteps(t, x), t_in, rtol=0, atol=1e-4)
    with torch.no_grad():
        eps_official = net(x, t_in, y=y)[:, :3]  # learn_sigma: the mean output (the official torch.split(out, 3))
    eps = model.forward(x, t, y)
    torch.testing.assert_close(eps, eps_official, rtol=1e-5, atol=1e-6)
    assert eps.abs().mean() > 1e-3  # not a trivially zero network

    # classifier guidance, scale 2: eps - s sigma_t grad_x log softmax(classifier(x, t))[y] (cond_grad_fn)
    x_in = x.clone().requires_grad_(True)
    logp = torch.log_softmax(clf(x_in, t_in), dim=-1)[torch.arange(3), y]
    (grad,) = torch.autograd.grad(logp.sum(), x_in)
    sigma_t = float(ref.sigma(torch.tensor(t, dtype=torch.float64)))
    net2 = guided(model, 2.0)
    assert net2 is not model and net2.num_classes == 1000 and net2.forward_ad is False
    assert isinstance(net2, Guided) and net2.base is model and not has_exact_solution(net2)  # unwrapped as any guided
    got = net2.forward(x, t, y)
    torch.testing.assert_close(got, eps_official - 2.0 * sigma_t * grad, rtol=1e-5, atol=1e-6)
    assert (got - eps).abs().max() > 1e-4  # the guidance term is not negligible here
    torch.testing.assert_close(guided(model, 0.0).forward(x, t, y), eps)  # s = 0: the conditional UNet alone
    # a per-sample time vector (finite differences, multistep solvers) gives the same rows
    torch.testing.assert_close(net2.forward(x, torch.full((3,), t, dtype=torch.float64), y), got)
    assert guided(model, 2.0).cache_key() != guided(model, 4.0).cache_key() != model.cache_key()


def test_rows_do_not_depend_on_their_batch_and_fp16_follows_the_flags(adm: tuple[Path, Any, Any]) -> None:
    folder, _, _ = adm
    model = guided(load_adapter(_entry(folder, micro_batch=2), folder), 1.5)
    torch.manual_seed(1)
    x, y = torch.randn(3, 3, 64, 64, dtype=torch.float64), torch.tensor([1, 2, 3])
    whole = model.eps(x, 0.7, y)
    rows = torch.cat([model.eps(x[i:i + 1], 0.7, y[i:i + 1]) for i in range(3)])
    assert whole.dtype == torch.float64 and torch.equal(whole, rows)
    with model.fixed_batch():  # a fit's own set: one call per batch, the chunking back afterwards
        assert model.base.micro_batch == 0
        torch.testing.assert_close(model.eps(x, 0.7, y), whole, rtol=1e-5, atol=1e-6)
    assert model.base.micro_batch == 2

    half = load_adapter(_entry(folder, model_flags={**GD_TINY_FLAGS, "use_fp16": True},
                               classifier_flags={**GD_TINY_CLASSIFIER_FLAGS, "classifier_use_fp16": True}), folder)
    assert half.net.input_blocks[0][0].weight.dtype == torch.float16  # convert_to_fp16, as the official samplers
    assert half.classifier.input_blocks[0][0].weight.dtype == torch.float16
    full = load_adapter(_entry(folder), folder)
    xf, yf = x.float()[:2], y[:2]
    a, b = guided(half, 1.5).forward(xf, 0.7, yf), guided(full, 1.5).forward(xf, 0.7, yf)
    assert a.dtype == torch.float32 and not torch.equal(a, b)
    torch.testing.assert_close(a, b, rtol=0.05, atol=0.02)


def test_dpm_solver_v3_statistics_take_finite_differences_through_the_classifier(adm: tuple[Path, Any, Any]) -> None:
    folder, _, _ = adm
    model = guided(load_adapter(_entry(folder), folder), 2.0)
    torch.manual_seed(2)
    x, v, z = (torch.randn(1, 3, 64, 64, dtype=torch.float64) for _ in range(3))
    lam = float(model.schedule.lambda_(torch.tensor(0.5, dtype=torch.float64)))
    d_lam, jz = dpm_solver_v3.x0_jvps(model, x, lam, v, z, torch.tensor([7]))
    # central differences of x0 along z by hand, in float64 around the network's float32 noise
    step = 1e-2
    hi = model.x0(x + step * z, model.schedule.t_of_lambda(torch.tensor(lam, dtype=torch.float64)), torch.tensor([7]))
    lo = model.x0(x - step * z, model.schedule.t_of_lambda(torch.tensor(lam, dtype=torch.float64)), torch.tensor([7]))
    fd = (hi - lo) / (2 * step)
    assert torch.isfinite(d_lam).all()
    cos = torch.nn.functional.cosine_similarity(jz.flatten(), fd.flatten(), dim=0)
    assert cos > 0.99, float(cos)


def test_bad_entries_fail_in_one_line(adm: tuple[Path, Any, Any], tmp_path: Path) -> None:
    folder, _, _ = adm
    cases = [
        (_entry(folder, model_file=None), "model_file"),
        (_entry(folder, model_flags={**GD_TINY_FLAGS, "num_chanels": 32}), "num_channels"),
        (_entry(folder, model_flags={**GD_TINY_FLAGS, "num_channels": 64}), "does not fit"),
        (_entry(folder, model_flags={**GD_TINY_FLAGS, "noise_schedule": "quad"}), "noise_schedule"),
        (_entry(folder, model_flags={**GD_TINY_FLAGS, "timestep_respacing": "250"}), "timestep_respacing"),
        (_entry(folder, code_path=str(tmp_path)), "guided_diffusion/script_util.py"),
        ({**_entry(folder), "files": [{"path": "unet.pt", "sha256": "0" * 64}]}, "sha256"),
        ({**_entry(folder), "resolution": 256}, "image_size 64"),
    ]
    for entry, word in cases:
        with pytest.raises(DpmbenchError, match=word) as info:
            load_adapter(entry, folder)
        assert "\n" not in str(info.value)
    model = load_adapter(_entry(folder), folder)
    with pytest.raises(DpmbenchError, match="classifier-guidance scale") as info:
        model.eps(torch.zeros(1, 3, 64, 64), 0.5)  # unguided: a class-conditional UNet has no labels
    assert "\n" not in str(info.value)


def test_a_checkout_named_by_code_path_is_the_code_used(adm: tuple[Path, Any, Any], tmp_path: Path) -> None:
    """The rehearsal's stand-in checkout replaces an installed guided_diffusion imported earlier in the process."""
    import sys

    import guided_diffusion.script_util  # noqa: F401  (the installed package, imported first)
    from standins import write_guided_diffusion_standin

    code = write_guided_diffusion_code(tmp_path / "gd")
    flags = {"image_size": 16, "num_channels": 8, "class_cond": True, "learn_sigma": True}
    write_guided_diffusion_standin(code, tmp_path / "w", flags, {"classifier_width": 8}, ("m.pt", "c.pt"))
    entry = {**_entry(tmp_path / "w", model_file="m.pt", classifier_file="c.pt", model_flags=flags,
                      classifier_flags={"classifier_width": 8}, code_path=str(code)), "resolution": 16}
    model = guided(load_adapter(entry, tmp_path / "w"), 2.0)
    assert sys.modules["guided_diffusion"].__file__.startswith(str(code))
    assert model.eps(torch.zeros(2, 3, 16, 16), 0.5, torch.tensor([1, 2])).shape == (2, 3, 16, 16)
    for name in [m for m in sys.modules if m.split(".")[0] == "guided_diffusion"]:
        sys.modules.pop(name)  # later tests import the installed package again


def test_a_folder_url_source_serves_several_files() -> None:
    raw = {"adapter": "guided-diffusion", "source": {"url": "https://example.org/jul-2021/"},
           "files": [{"path": "a.pt", "sha256": None}, {"path": "sub/b c.pt", "sha256": None}],
           "license": "MIT", "schedule": "vp-discrete", "parameterization": "eps", "resolution": 64}
    e = parse_entry("x", raw)
    assert [e.url(f) for f in e.files] == ["https://example.org/jul-2021/a.pt",
                                           "https://example.org/jul-2021/sub/b%20c.pt"]
    with pytest.raises(DpmbenchError, match="exactly one file for a url source"):
        parse_entry("x", {**raw, "source": {"url": "https://example.org/jul-2021/a.pt"}})
