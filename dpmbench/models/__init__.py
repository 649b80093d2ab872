"""Models: the interface, oracle models with exact solutions, guidance and NFE counting."""

from dpmbench.models.base import (
    Guided,
    Model,
    NFECounter,
    convert_prediction,
    guided,
    has_exact_solution,
    prior_noise,
)
from dpmbench.models.registry import list_models, load_model

__all__ = [
    "Guided", "Model", "NFECounter", "convert_prediction", "guided", "has_exact_solution", "list_models", "load_model",
    "prior_noise",
]
