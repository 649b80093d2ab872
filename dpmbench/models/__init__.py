"""Models: the interface, oracle models with exact solutions, guidance and NFE counting, checkpoint adapters and
the checkpoint manifest (``manifest``, ``store``). The API below is imported lazily, so that reading the manifest
(``dpmbench list models``, the config check) does not import torch."""

from __future__ import annotations

from dpmbench.lazy import lazy_exports

_API = {
    "Guided": "dpmbench.models.base",
    "Model": "dpmbench.models.base",
    "NFECounter": "dpmbench.models.base",
    "convert_prediction": "dpmbench.models.base",
    "guided": "dpmbench.models.base",
    "has_exact_solution": "dpmbench.models.base",
    "prior_noise": "dpmbench.models.base",
    "list_models": "dpmbench.models.registry",
    "load_model": "dpmbench.models.registry",
}
__all__ = list(_API)

__getattr__ = lazy_exports(__name__, _API)
