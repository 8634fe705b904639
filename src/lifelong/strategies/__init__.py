"""Continual-learning strategies, one module per family, registered by name.

>>> from lifelong.strategies import STRATEGIES, create_strategy
>>> strategy = create_strategy("finetune")
"""

import importlib

from lifelong.strategies import baselines  # noqa: F401  (registers the baselines)
from lifelong.strategies.base import (
    STRATEGIES,
    Batch,
    FitFn,
    Strategy,
    TrainSet,
    classification_loss,
    create_strategy,
    masked_logits,
    register,
)

# Families register their methods on import; a family package missing from this checkout is
# simply absent from the registry.
for _family in ("regularization", "memory", "architecture", "text"):
    try:
        importlib.import_module(f"lifelong.strategies.{_family}")
    except ModuleNotFoundError as _err:  # pragma: no cover
        if _err.name != f"lifelong.strategies.{_family}":
            raise

__all__ = [
    "STRATEGIES",
    "Batch",
    "FitFn",
    "Strategy",
    "TrainSet",
    "classification_loss",
    "create_strategy",
    "masked_logits",
    "register",
]
