"""Task streams: generators (permuted, rotated, split, noisy; bAbI) and user data.

>>> from lifelong.streams import build_stream
>>> stream = build_stream("split", "digits", tasks=5, scenario="class", seed=0)
"""

from lifelong.streams import babi, vision  # noqa: F401  (register their generators)
from lifelong.streams.base import SCENARIOS, Stream, Task, TaskData
from lifelong.streams.custom import from_datasets, from_tensors
from lifelong.streams.registry import STREAMS, StreamSpec, build_stream, register_stream

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
