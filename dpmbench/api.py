"""The public ``dpmbench.sample``: ``dpmbench.sampling.sample`` with the searches wired in.

The sampling layer sits below the searches and does not import them; a solver whose ``prepare`` runs a search
(``dc-solver``, ``usf:search=true``) receives the search runner through its Context. This entry point, above both,
passes ``dpmbench.search.run_search``, so that every solver works through the public API.
"""

from __future__ import annotations

from typing import Any

import torch

from dpmbench import sampling


def sample(*args: Any, **kwargs: Any) -> torch.Tensor:
    """``dpmbench.sampling.sample`` (same arguments) with ``searcher=dpmbench.search.run_search``."""
    from dpmbench.search import run_search

    kwargs.setdefault("searcher", run_search)
    return sampling.sample(*args, **kwargs)


sample.__doc__ = f"{sample.__doc__}\n\n{sampling.sample.__doc__}"
