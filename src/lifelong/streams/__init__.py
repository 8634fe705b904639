"""Task streams: generators (permuted, rotated, split, noisy; bAbI) and user data.

>>> from lifelong.streams import build_stream
>>> stream = build_stream("split", "digits", tasks=5, scenario="class", seed=0)
"""

import importlib

from lifelong.streams import vision  # noqa: F401  (registers the image generators)
from lifelong.streams.base import SCENARIOS, Stream, Task, TaskData
from lifelong.streams.custom import from_datasets, from_tensors
from lifelong.streams.registry import STREAMS, StreamSpec, build_stream, register_stream

try:  # the bAbI stream registers itself; absent only in a partial checkout
    importlib.import_module("lifelong.streams.babi")
except ModuleNotFoundError as _err:  # pragma: no cover
    if _err.name != "lifelong.streams.babi":
        raise

__all__ = [
    "SCENARIOS",
    "STREAMS",
    "Stream",
    "StreamSpec",
    "Task",
    "TaskData",
    "build_stream",
    "from_datasets",
    "from_tensors",
    "register_stream",
]
