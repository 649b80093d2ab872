"""A small CNN classifier of scikit-learn's 8x8 digits, shipped with the package (no download).

Its 64-D penultimate activations give the "Frechet digits distance" (``fdd``) of the digits models, computed
through torch-fidelity's FID code path: the network is registered as the torch-fidelity feature extractor
``digits-cnn`` (features ``"64"`` for FID/KID, ``"logits_unbiased"`` for IS). Input: uint8 images Bx1x8x8 (or
Bx3x8x8, averaged to grey) quantized from [-1, 1] with the EDM convention ``(x*127.5+128).clip(0,255)``.

Retrain (deterministic, CPU, about a minute): ``python -m evaluators.digits_cnn_build --train --stats`` (then update
the sha256 of ``digits-cnn-digits`` in ``reference_stats/manifest.yaml``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.helpers import vassert
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

WEIGHTS = Path(__file__).with_name("digits_cnn.pt")
EXTRACTOR_NAME = "digits-cnn"
FEATURES = ("64", "logits_unbiased")
TRAIN_SEED = 0


class DigitsCNN(nn.Module):
    """conv(1->32) -> conv(32->64) -> maxpool -> fc(1024->64) -> fc(64->10); about 85k parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(64-D penultimate activations, logits) of float images in [-1, 1], shape Bx1x8x8."""
        h = F.relu(self.conv1(x))
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        f = F.relu(self.fc1(h.flatten(1)))
        return f, self.fc2(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[1]


def uint8_to_unit(x: torch.Tensor) -> torch.Tensor:
    """Inverse of the EDM quantization: uint8 -> float in about [-1, 1]."""
    return (x.to(torch.float32) - 128.0) / 127.5


def load_digits_cnn(path: str | Path | None = None) -> DigitsCNN:
    """The shipped network (``weights_only=True``: no unpickling of arbitrary objects)."""
    net = DigitsCNN()
    net.load_state_dict(torch.load(Path(path or WEIGHTS), map_location="cpu", weights_only=True))
    return net.eval().requires_grad_(False)


def weights_sha256(path: str | Path | None = None) -> str:
    """sha256 of the weights file (a cache key of features computed with it)."""
    return hashlib.sha256(Path(path or WEIGHTS).read_bytes()).hexdigest()


class DigitsFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity feature extractor wrapping :class:`DigitsCNN`."""

    def __init__(self, name: str, features_list: list[str], feature_extractor_weights_path: str | None = None,
                 **kwargs: object) -> None:
        super().__init__(name, features_list)
        self.net = load_digits_cnn(feature_extractor_weights_path)

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return FEATURES

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return {"isc": "logits_unbiased", "fid": "64", "kid": "64", "prc": "64"}[metric]

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        return torch.zeros(1, 1, 8, 8, dtype=torch.uint8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        vassert(torch.is_tensor(x) and x.dtype == torch.uint8, "Expecting image as torch.Tensor with dtype=torch.uint8")
        vassert(x.dim() == 4 and x.shape[1] in (1, 3) and tuple(x.shape[2:]) == (8, 8),
                f"Input is not Bx1x8x8: {x.shape}")
        u = uint8_to_unit(x)
        if u.shape[1] == 3:
            u = u.mean(1, keepdim=True)
        f, logits = self.net.features(u)
        out = {"64": f, "logits_unbiased": logits}
        return tuple(out[k] for k in self.features_list)


def register() -> None:
    """Register ``digits-cnn`` with torch-fidelity (idempotent)."""
    if EXTRACTOR_NAME not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(EXTRACTOR_NAME, DigitsFeatureExtractor)


def train(out: str | Path = WEIGHTS, epochs: int = 30, seed: int = TRAIN_SEED) -> float:
    """Train on all 1,797 digits (quantized like samples, light noise/shift augmentation); returns the
    accuracy on the clean quantized digits. Deterministic on CPU for a given seed."""
    from dpmbench.models.registry import digits_data

    torch.manual_seed(seed)
    x, y = digits_data()
    xq = uint8_to_unit((x.reshape(-1, 1, 8, 8) * 127.5 + 128).clamp(0, 255).to(torch.uint8))
    net = DigitsCNN()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(xq), generator=g)
        for i in range(0, len(xq), 64):
            idx = perm[i:i + 64]
            xb = xq[idx] + 0.1 * torch.randn(xq[idx].shape, generator=g)
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = float((net(xq).argmax(1) == y).double().mean())
    torch.save(net.state_dict(), out)
    return acc

