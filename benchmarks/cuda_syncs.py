"""Host synchronisations inside the training steps on a GPU (issue 17, item 6).

    python benchmarks/cuda_syncs.py [--strategies NAME ...]

For each strategy (default: finetune, ewc, agem, gem, replay, lwf, icarl, generative-replay),
two split-digits tasks (the task scenario, so that column masks are used, where the strategy
runs in it) are trained on ``cuda`` with PyTorch's synchronisation debugger on (``torch.cuda.set_sync_debug_mode("warn")``) from the start to the
end of every ``Trainer.fit``, except while the loop reads its pending losses (once per
``Trainer.LOSS_READ_SECONDS``, by design). Every warning is one point where the host waited for
the device; the script prints their count per strategy and where each came from. GEM's one
check per step (whether its QP is needed) and its QP are expected; any other is a defect.

``tests/test_host_reads.py`` checks the same on a CPU by counting the host's reads of tensor
values; this script is the device-side check and needs a GPU.
"""

from __future__ import annotations

import argparse
import collections
import os
import traceback
import warnings

DEFAULT_STRATEGIES = [
    "finetune", "ewc", "agem", "gem", "replay", "lwf", "icarl", "generative-replay"
]  # fmt: skip


def count_syncs(name: str) -> collections.Counter:
    import torch

    from lifelong.runner import learn_stream
    from lifelong.streams import build_stream
    from lifelong.train import TrainConfig, Trainer

    where: collections.Counter = collections.Counter()
    fit, read = Trainer.fit, Trainer._read_losses

    def in_mode(method, mode: str, after: str):
        """``method`` run with the synchronisation debugger in ``mode``, then set to ``after``."""

        def wrapped(self, *args, **kwargs):
            torch.cuda.set_sync_debug_mode(mode)
            try:
                return method(self, *args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode(after)

        return wrapped

    def record(message, category, filename, lineno, file=None, line=None):
        if "synchroniz" not in str(message):
            return  # another warning
        ours = f"{os.sep}lifelong{os.sep}"
        frames = [f for f in traceback.extract_stack()[:-1] if ours in f.filename]
        site = f"{frames[-1].filename.split('src/')[-1]}:{frames[-1].lineno}" if frames else "?"
        where[site] += 1

    from lifelong.strategies import STRATEGIES

    scenarios = STRATEGIES[name].scenarios
    scenario = "task" if "task" in scenarios else scenarios[0]
    stream = build_stream("split", "digits", tasks=2, scenario=scenario, seed=0)
    Trainer.fit = in_mode(fit, "warn", "default")  # every step watched ...
    Trainer._read_losses = in_mode(read, "default", "warn")  # ... but the loss reads
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = record
            learn_stream(stream, name, device="cuda", train=TrainConfig(batch_size=10, lr=0.1))
    finally:
        Trainer.fit, Trainer._read_losses = fit, read
    return where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", default=DEFAULT_STRATEGIES)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("cuda_syncs: no CUDA device here; run it on a GPU machine")
    for name in args.strategies:
        where = count_syncs(name)
        print(f"{name}: {sum(where.values())} host synchronisations inside fit")
        for site, n in where.most_common():
            print(f"    {n:6d}  {site}")


if __name__ == "__main__":
    main()
