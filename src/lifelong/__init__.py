"""lifelong: lifelong (continual) learning on PyTorch.

The names a user needs, loaded on first use (``import lifelong`` itself imports no torch)::

    import lifelong

    stream = lifelong.build_stream("split", "digits", tasks=5, scenario="class")
    result = lifelong.learn_stream(stream, "ewc", train=lifelong.TrainConfig(epochs=2))
    frame = result.to_dataframe()
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "learn_stream": "lifelong.runner",
    "run_experiment": "lifelong.experiment",
    "RunConfig": "lifelong.config",
    "TrainConfig": "lifelong.train",
    "build_stream": "lifelong.streams",
    "from_tensors": "lifelong.streams",
    "from_datasets": "lifelong.streams",
    "Stream": "lifelong.streams",
    "Strategy": "lifelong.strategies",
    "register": "lifelong.strategies",
    "create_strategy": "lifelong.strategies",
    "STRATEGIES": "lifelong.strategies",
    "Callback": "lifelong.callbacks",
    "ProgressBar": "lifelong.callbacks",
    "CSVLogger": "lifelong.callbacks",
    "TensorBoardLogger": "lifelong.callbacks",
    "WandbLogger": "lifelong.callbacks",
    "RunResults": "lifelong.results",
    "StrategyResult": "lifelong.results",
    "load_results": "lifelong.results",
    "load_dataframe": "lifelong.results",
    "LifelongError": "lifelong.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lifelong' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
