"""Memory and replay methods: GEM, A-GEM, experience replay, generative replay, LwF, iCaRL.

Importing this package registers them (``lifelong.strategies`` imports it).
"""

from lifelong.strategies.memory import agem, gem, generative, icarl, lwf, replay  # noqa: F401
from lifelong.strategies.memory.agem import AGEM, agem_project
from lifelong.strategies.memory.buffer import (
    EpisodicMemory,
    SampleBuffer,
    class_balanced_indices,
    reservoir_slots,
)
from lifelong.strategies.memory.gem import GEM, gem_project, memory_gradients, solve_gem_dual
from lifelong.strategies.memory.generative import VAE, GenerativeReplay
from lifelong.strategies.memory.icarl import ICaRL, herding
from lifelong.strategies.memory.lwf import LwF
from lifelong.strategies.memory.replay import Replay

__all__ = [
    "AGEM",
    "GEM",
    "VAE",
    "EpisodicMemory",
    "GenerativeReplay",
    "ICaRL",
    "LwF",
    "Replay",
    "SampleBuffer",
    "agem_project",
    "class_balanced_indices",
    "gem_project",
    "herding",
    "memory_gradients",
    "reservoir_slots",
    "solve_gem_dual",
]
