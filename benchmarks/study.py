"""A study of 16 units (4 strategies x 4 seeds, permuted digits): serially and on 2 Ray workers.

Runs the same 16 unit folders twice through :func:`lifelong.engine.run_units`: once serially in
this process (``jobs=1``), once on a local Ray with ``--workers`` units at a time, one torch
thread per unit in both, and records the wall times and the speed-up. The engine's own costs are
measured apart:

* start-up: ``ray.init`` of a local Ray with that many CPUs plus ``ray.shutdown``;
* scheduling: the round trip of a unit task that does nothing (after the workers are warm);
* per-unit overhead in the study itself: (wall x workers - sum of the units' own times) / units,
  with and without the start-up, next to the mean and median time a unit spends in
  ``run_unit`` (the first unit of each worker also pays the worker's imports).

    python benchmarks/study.py [--workers 2] [--tasks 5] [--train-samples 600]

Writes ``benchmarks/out/study.json``; the numbers are in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import OUT_DIR, machine, save_json
from lifelong.engine import Unit, run_units
from lifelong.experiment import run_experiment  # noqa: F401  (imports paid up front)
from lifelong.sweep import build_sweep, prepare_run_dirs

STRATEGIES = ["finetune", "ewc:lambda=1", "si:c=0.1", "replay"]
SEEDS = [0, 1, 2, 3]


def units_in(out: Path, base: dict) -> list[Unit]:
    shutil.rmtree(out, ignore_errors=True)
    sweep = build_sweep(base, {"strategy": STRATEGIES, "seed": SEEDS})
    prepare_run_dirs(sweep, out)
    return [Unit(out / job.name, job.name) for job in sweep.jobs]


def timed_study(units: list[Unit], workers: int) -> dict:
    start = time.perf_counter()
    statuses = run_units(units, jobs=workers, threads=1, reports=False)
    wall = time.perf_counter() - start
    bad = [s for s in statuses if s.status != "complete"]
    if bad:
        raise SystemExit(f"{len(bad)} units did not complete: {bad[0].unit.name} {bad[0].reason}")
    own = [s.seconds for s in statuses]
    return {
        "wall_s": wall,
        "unit_s": own,
        "unit_mean_s": statistics.fmean(own),
        "unit_median_s": statistics.median(own),  # steady state: warm process, warm caches
    }


def ray_costs(workers: int, repeats: int = 20) -> dict:
    """ray.init + shutdown of a local Ray, and the round trip of a no-op task on warm workers."""
    import ray

    start = time.perf_counter()
    ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
    init = time.perf_counter() - start
    try:
        noop = ray.remote(lambda: None).options(num_cpus=1)
        ray.get([noop.remote() for _ in range(workers)])  # start the workers
        trips = []
        for _ in range(repeats):
            begin = time.perf_counter()
            ray.get(noop.remote())
            trips.append(time.perf_counter() - begin)
    finally:
        begin = time.perf_counter()
        ray.shutdown()
        shutdown = time.perf_counter() - begin
    return {"init_s": init, "shutdown_s": shutdown, "task_round_trip_ms": 1000 * statistics.median(trips)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=5)
    parser.add_argument("--train-samples", type=int, default=600)
    args = parser.parse_args()
    base = {
        "data": "digits", "stream": "permuted", "tasks": args.tasks,
        "train_samples": args.train_samples, "test_samples": 200, "epochs": 1,
    }  # fmt: skip
    root = OUT_DIR / "study"
    serial = timed_study(units_in(root / "serial", base), 1)
    print(f"serial: {serial['wall_s']:.1f} s, a unit {serial['unit_mean_s']:.2f} s on average")
    costs = ray_costs(args.workers)
    print(f"ray: init {costs['init_s']:.1f} s, shutdown {costs['shutdown_s']:.1f} s, "
          f"no-op task {costs['task_round_trip_ms']:.1f} ms")  # fmt: skip
    parallel = timed_study(units_in(root / "ray", base), args.workers)
    n = len(parallel["unit_s"])
    busy = sum(parallel["unit_s"])
    overhead = (parallel["wall_s"] * args.workers - busy) / n
    startup = costs["init_s"] + costs["shutdown_s"]
    without_startup = ((parallel["wall_s"] - startup) * args.workers - busy) / n
    speedup = serial["wall_s"] / parallel["wall_s"]
    print(f"{args.workers} workers: {parallel['wall_s']:.1f} s, speed-up {speedup:.2f}x, "
          f"a unit {parallel['unit_mean_s']:.2f} s (median {parallel['unit_median_s']:.2f} s, "
          f"serially {serial['unit_median_s']:.2f} s); engine overhead per unit "
          f"{overhead:.2f} s ({without_startup:.2f} s without Ray's start-up)")  # fmt: skip
    path = save_json(
        "study",
        {
            "machine": machine(),
            "command": " ".join(["python", *sys.argv]),
            "base": base,
            "strategies": STRATEGIES,
            "seeds": SEEDS,
            "workers": args.workers,
            "serial": serial,
            "parallel": parallel,
            "ray": costs,
            "speedup": speedup,
            "overhead_per_unit_s": overhead,
            "overhead_per_unit_without_startup_s": without_startup,
        },
    )
    print(path)


if __name__ == "__main__":
    main()
