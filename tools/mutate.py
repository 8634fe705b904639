"""Hand-written mutation testing of ``strategies/`` (``make mutate``, with mutmut for
metrics.py, evaluate.py and train.py): each mutation is one deliberate bug of a method, applied
to a scratch copy of ``src/`` and ``tests/`` (the working tree is never touched), with the test
subset that should catch it. A mutation *survives* when its tests still pass.

Usage: ``python tools/mutate.py [-k SUBSTRING]``; prints one line per mutation and a summary,
exit status 1 when a mutation survived. TESTING.md lists the results and explains survivors.
mutmut's automatic operators cannot be used on ``strategies/`` here: each of thousands of
mutants would run seconds-long training tests on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
S = "src/lifelong/strategies"


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


def m(name: str, path: str, old: str, new: str, *tests: str) -> Mutation:
    return Mutation(name, path, old, new, tests)


FR = "tests/test_fidelity_regularization.py"
FM = "tests/test_fidelity_memory.py"
FISH = "tests/test_regularization_fisher.py"
OV = "tests/test_official_variants.py"
TIED = f"{FISH}::test_tied_weights_get_the_gradient_of_every_use"
TIED_ROUTE = f"{FISH}::test_tied_layers_leave_the_fast_route_and_the_others_keep_it"
EVAL = f"{FR}::test_importances_are_computed_in_eval_mode"
TRUE_FISHER = f"{FR}::test_true_fisher_labels_follow_the_models_softmax_over_the_head"
EWC = f"{FR}::test_ewc_penalty_is_the_sum_of_every_past_tasks_penalty"
ONLINE = f"{FR}::test_online_ewc_decays_the_running_fisher_and_anchors_at_the_latest_task"
MAS = f"{FR}::test_mas_accumulates_over_three_tasks_from_per_sample_gradients"
SI = f"{FR}::test_si_importance_over_two_tasks_with_xi_and_reset"
RW = "tests/test_regularization_rwalk_scp.py"
HOST = "tests/test_host_reads.py"
API = "tests/test_api_runs.py"
MUTATIONS = [
    m(
        "persample: tied weights kept on the fast route",
        f"{S}/regularization/persample.py",
        " and all(uses.get(id(p), 0) == 1 for p in own)",
        "",
        TIED_ROUTE,
    ),
    m(
        "persample: sole-use check skipped",
        f"{S}/regularization/persample.py",
        "                _check_sole_use(model, sample_loss, params, buffers, (x, target), found)",
        "                pass",
        TIED,
    ),
    m(
        "persample: importances in train mode",
        f"{S}/regularization/persample.py",
        "    was_training = model.training\n    model.eval()\n    try:\n        iterator",
        "    was_training = model.training\n    try:\n        iterator",
        EVAL,
    ),
    m(
        "persample: true-Fisher labels uniform",
        f"{S}/regularization/persample.py",
        "probs = F.softmax(model(x)[:, start:stop], dim=1)",
        "probs = torch.ones_like(model(x)[:, start:stop])",
        TRUE_FISHER,
    ),
    m(
        "persample: true Fisher uses the data's labels",
        f"{S}/regularization/persample.py",
        'targets = "sampled" if labels == "true" else "labels"',
        'targets = "labels"',
        TRUE_FISHER,
    ),
    m(
        "persample: abs replaced by square",
        f"{S}/regularization/persample.py",
        'if reduce == "square" else torch._foreach_abs(values)',
        "if True else torch._foreach_abs(values)",
        MAS,
    ),
    m(
        "ewc: only the last task's Fisher and anchor",
        f"{S}/regularization/ewc.py",
        "self.fishers.append(self.task_fisher(task, model))\n"
        "        self.anchors.append(snapshot(model))",
        "self.fishers = [self.task_fisher(task, model)]\n        self.anchors = [snapshot(model)]",
        EWC,
    ),
    m(
        "ewc: lambda instead of lambda/2",
        f"{S}/regularization/ewc.py",
        "        return self.lambda_ / 2\n\n    def after_task(self, task: Task, model: nn.Module, "
        "fit: FitFn) -> None:\n        self.fishers",
        "        return self.lambda_\n\n    def after_task(self, task: Task, model: nn.Module, "
        "fit: FitFn) -> None:\n        self.fishers",
        EWC,
    ),
    m(
        "online-ewc: no decay",
        f"{S}/regularization/ewc.py",
        "name: old.mul(self.gamma).add_(new[name])",
        "name: old.add(new[name])",
        ONLINE,
    ),
    m(
        "online-ewc: penalty without gamma",
        f"{S}/regularization/ewc.py",
        "decayed = {name: f.mul(self.gamma)",
        "decayed = {name: f.mul(1.0)",
        ONLINE,
    ),
    m(
        "mas: importance replaced, not accumulated",
        f"{S}/regularization/mas.py",
        "self.importance = {name: old + new[name] for name, old in self.importance.items()}",
        "self.importance = new",
        MAS,
    ),
    m(
        "l2: anchor frozen at task 1",
        f"{S}/regularization/l2.py",
        "        anchor = snapshot(model)",
        "        if self.penalty is not None:\n            return\n        anchor = snapshot(model)",
        f"{FR}::test_l2_anchor_follows_the_latest_task",
    ),
    m(
        "si: path integral not reset",
        f"{S}/regularization/si.py",
        "        self.path.reset()",
        "        pass",
        SI,
    ),
    m(
        "si: xi dropped",
        f"{S}/regularization/si.py",
        "(delta.square() + self.xi)",
        "(delta.square() + 1e-8)",
        SI,
    ),
    m(
        "si: clip applied to omega, not to the accumulated Omega",
        f"{S}/regularization/si.py",
        "            self.importance[name] += omega[name] / (delta.square() + self.xi)\n"
        "            if self.clip:\n                self.importance[name].clamp_(min=0)",
        "            add = omega[name] / (delta.square() + self.xi)\n"
        "            self.importance[name] += add.clamp(min=0) if self.clip else add",
        OV,
    ),
    m(
        "si: regularised gradient integrated",
        f"{S}/regularization/si.py",
        "        self.path.before_step(self.path.parameters_of(model))  # unregularised gradient\n"
        "        super().after_backward(model, batch, task)  # then the penalty's gradient",
        "        super().after_backward(model, batch, task)\n"
        "        self.path.before_step(self.path.parameters_of(model))",
        SI,
    ),
    m(
        "scp: importances in train mode",
        f"{S}/regularization/scp.py",
        "    model.eval()\n    try:",
        "    try:",
        EVAL,
    ),
    m(
        "scp: alpha ignored",
        f"{S}/regularization/scp.py",
        "g * a + new[n] * (1 - a)",
        "new[n]",
        "tests/test_regularization_rwalk_scp.py",
    ),
    m(
        "rwalk: no 1/2 in the KL",
        f"{S}/regularization/rwalk.py",
        ".mul_(fisher[name]).mul_(0.5)",
        ".mul_(fisher[name])",
        "tests/test_regularization_rwalk_scp.py",
    ),
    m(
        "rwalk: negative scores kept",
        f"{S}/regularization/rwalk.py",
        "moved.add_(self.epsilon)).clamp_(min=0)",
        "moved.add_(self.epsilon))",
        f"{FR}::test_rwalk_interval_score_clips_negative_contributions",
    ),
    m(
        "rwalk: scores summed, not averaged",
        f"{S}/regularization/rwalk.py",
        "(s + self.task_score[name]) / 2",
        "(s + self.task_score[name])",
        "tests/test_regularization_rwalk_scp.py",
    ),
    m(
        "anchor: penalty gradient without the factor 2",
        f"{S}/regularization/anchor.py",
        "weighted, alpha=2.0 * scale)",
        "weighted, alpha=scale)",
        "tests/test_regularization_penalty.py::test_hooks_add_exactly_the_gradient_of_the_penalty",
    ),
    m(
        "icarl: no distillation",
        f"{S}/memory/icarl.py",
        "        if self.previous is not None and self.old_classes:\n            old",
        "        if False:\n            old",
        FM,
    ),
    m(
        "icarl: softmax cross-entropy",
        f"{S}/memory/icarl.py",
        "        bce = F.binary_cross_entropy_with_logits(\n            logits[:, seen], "
        'targets[:, seen], reduction="none"\n        )\n        return bce.sum(1).mean()',
        "        return F.cross_entropy(logits[:, seen], batch.y)",
        FM,
    ),
    m(
        "generative-replay: uniform soft targets",
        f"{S}/memory/generative.py",
        "            target = F.softmax(teacher / t, dim=1)",
        "            target = mask.float() / mask.float().sum(1, keepdim=True)",
        FM,
    ),
    m(
        "generative-replay: no T^2",
        f"{S}/memory/generative.py",
        ".sum(1).mean() * t * t",
        ".sum(1).mean()",
        FM,
    ),
    m(
        "generative-replay: student over the old columns only",
        f"{S}/memory/generative.py",
        'student_mask = mask if self.stream.scenario == "task" else batch.mask',
        "student_mask = mask",
        FM,
    ),
    m(
        "lwf: temperature 1",
        f"{S}/memory/lwf.py",
        "logits[:, cols], old_logits[:, cols], self.temperature",
        "logits[:, cols], old_logits[:, cols], 1.0",
        FM,
    ),
    m(
        "lwf: old heads distilled as one softmax",
        f"{S}/memory/lwf.py",
        "            self.old_heads = [tuple(range(*t.columns)) for t in seen]",
        "            self.old_heads = [tuple(c for t in seen for c in range(*t.columns))]",
        FM,
    ),
    m(
        "gem: margin not applied",
        f"{S}/memory/gem.py",
        "np.full(t, float(margin))",
        "np.full(t, 0.0)",
        "tests/test_memory_gem.py::test_gem_projection_with_margin_matches_brute_force_dual",
    ),
    m(
        "gem: absolute ridge ignored",
        f"{S}/memory/gem.py",
        "if relative else 1.0",
        "if True else 1.0",
        OV,
    ),
    m(
        "agem: projection with the wrong sign",
        f"{S}/memory/agem.py",
        "return g - (dot / torch.dot(g_ref, g_ref)",
        "return g + (dot / torch.dot(g_ref, g_ref)",
        "tests/test_memory_gem.py::test_agem_projection_matches_closed_form",
    ),
    m(
        "lamol: ANS weight dropped",
        "src/lifelong/text_models.py",
        "weight=weight, ignore_index=0",
        "ignore_index=0",
        OV,
    ),
    m(
        "lamol: keep ignored",
        f"{S}/text/lamol.py",
        'if self.keep == "task" else',
        "if True else",
        OV,
    ),
    m(
        "train: the loss read at every step again",
        "src/lifelong/train.py",
        "                    if window is None:\n",
        "                    loss.item()\n                    if window is None:\n",
        HOST,
    ),
    m(
        "train: the end-of-fit read of the pending losses dropped",
        "src/lifelong/train.py",
        "            raise\n        self._read_losses(pending, task)\n",
        "            raise\n",
        f"{HOST}::test_deferred_losses_are_the_per_step_losses_in_order",
    ),
    m(
        "train: the pending losses not read when a step fails",
        "src/lifelong/train.py",
        "        except Exception:\n            # A loss that diverged",
        "        except ZeroDivisionError:\n            # A loss that diverged",
        "tests/test_train.py::test_a_step_failing_after_a_diverged_loss_reports_the_divergence",
    ),
    m(
        "train: no record of each step's inputs being finite",
        "src/lifelong/train.py",
        "loss.detach(), _extremes(batch.x)))",
        "loss.detach(), None))",
        f"{HOST}::test_nan_inputs_read_through_a_dataloader_are_named",
    ),
    m(
        "train: pending losses stacked as they are",
        "src/lifelong/train.py",
        "loss if loss.dim() == 0 else loss.reshape(())",
        "loss",
        f"{HOST}::test_a_one_element_loss_is_read_as_a_number",
    ),
    m(
        "train: a curve point before the pending losses are read",
        "src/lifelong/train.py",
        "                        self._read_losses(pending, task)  # no curve point of a diverged model\n",
        "",
        f"{HOST}::test_no_curve_point_is_measured_after_the_loss_diverged",
    ),
    m(
        "runner: a strategy object reused for a second run",
        "src/lifelong/runner.py",
        'if "stream" in vars(strategy):',
        "if False:",
        f"{API}::test_a_strategy_object_serves_one_run",
    ),
    m(
        "runner: a checkpoint of another run resumed",
        "src/lifelong/runner.py",
        "if run is not None and written is not None and written != run:",
        "if False:",
        f"{API}::test_a_checkpoint_resumes_only_the_run_that_wrote_it",
    ),
    m(
        "runner: the model's requires_grad flags left as the strategy set them",
        "src/lifelong/runner.py",
        "            param.requires_grad_(flag)",
        "            pass",
        f"{API}::test_your_model_keeps_its_requires_grad_flags",
    ),
    m(
        "gem: batch-norm models through vmap again",
        f"{S}/memory/gem.py",
        "if couples_or_mutates(model):",
        "if False:",
        "tests/test_gem_gradients.py",
    ),
    m(
        "agem: the projection behind a branch again",
        f"{S}/memory/agem.py",
        "        write_flat_grad(params, projected)\n",
        "        if changed:\n            write_flat_grad(params, projected)\n",
        HOST,
    ),
    m(
        "buffer: an early return read from the device",
        f"{S}/memory/buffer.py",
        "    order = torch.argsort(slots, stable=True)\n",
        "    if not (slots >= 0).any():\n        return slots >= 0\n"
        "    order = torch.argsort(slots, stable=True)\n",
        HOST,
    ),
    m(
        "buffer: the ring buffer's wrapped part written at the row's end",
        f"{S}/memory/buffer.py",
        "        self.x[row, : n - head] = x[head:]\n",
        "        self.x[row, self.per_task - (n - head) :] = x[head:]\n",
        "tests/test_memory_buffer.py::test_ring_buffer_slots_match_a_modular_reference",
    ),
    m(
        "ewc: true-Fisher labels by inverse CDF",
        f"{S}/regularization/persample.py",
        "    q = torch.empty(probs.shape, dtype=probs.dtype).exponential_(generator=generator)\n"
        "    return (probs / to_device(q, probs.device)).argmax(1) + start\n",
        "    u = torch.rand(len(probs), 1, dtype=probs.dtype, generator=generator)\n"
        "    return (probs.cumsum(1) < u).sum(1).clamp(max=probs.shape[1] - 1) + start\n",
        f"{FISH}::test_sampled_labels_are_torch_multinomials_draws_bit_for_bit",
    ),
]


def run(mutation: Mutation, scratch: Path, env: dict[str, str]) -> tuple[bool, float]:
    """Apply, test, restore. Returns (killed, seconds)."""
    target = scratch / mutation.path
    original = target.read_text()
    if original.count(mutation.old) != 1:
        raise SystemExit(
            f"{mutation.name}: the text to mutate is not found once in {mutation.path}"
        )
    target.write_text(original.replace(mutation.old, mutation.new))
    start = time.monotonic()
    try:
        tests = [str(scratch / t) for t in mutation.tests]
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
        done = subprocess.run(cmd, cwd=scratch, env=env, capture_output=True, text=True)
    finally:
        target.write_text(original)
    return done.returncode != 0, time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", default="", help="only mutations whose name contains this")
    args = parser.parse_args()
    chosen = [mu for mu in MUTATIONS if args.k in mu.name]
    survivors = []
    begin = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lifelong-mutate-") as tmp:
        scratch = Path(tmp)
        shutil.copytree(ROOT / "src", scratch / "src")
        shutil.copytree(ROOT / "tests", scratch / "tests")
        shutil.copy(ROOT / "pyproject.toml", scratch / "pyproject.toml")
        env = dict(os.environ, PYTHONPATH=str(scratch / "src"), OMP_NUM_THREADS="1")
        for mutation in chosen:
            killed, seconds = run(mutation, scratch, env)
            print(f"{'killed  ' if killed else 'SURVIVED'} {seconds:6.1f}s  {mutation.name}")
            sys.stdout.flush()
            if not killed:
                survivors.append(mutation.name)
    total = time.monotonic() - begin
    print(f"{len(chosen) - len(survivors)}/{len(chosen)} killed in {total:.0f}s")
    for name in survivors:
        print(f"survivor: {name}")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
