"""Deep Generative Replay (Shin, Lee, Kim & Kim 2017, "Continual Learning with Deep Generative
Replay", NeurIPS), with the VAE generator and the optional soft-label (distillation) replay of
van de Ven, Siegelmann & Tolias 2020 ("Brain-inspired replay for continual learning with
artificial neural networks", Nature Communications) and van de Ven & Tolias 2019 ("Three scenarios
for continual learning").

A "scholar" is a generator and a solver. While task ``t`` trains, the previous scholar (frozen
copies taken before the task) produces replayed inputs ``x'`` with its generator and labels them
with its solver; no real data of old tasks is kept. The solver minimises (Shin et al. Eq. 1)

    r * CE(S(x), y) + (1 - r) * CE(S(x'), S_old(x'))

Generator and solver are trained separately, as in Shin et al.: after the solver has learned
task ``t``, the generator is trained for ``generator_iterations`` steps on task ``t``'s inputs
mixed with samples of the previous generator (same weights ``r`` and ``1 - r``), so each
generator can reproduce the inputs of all tasks so far.
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong.errors import ConfigError
from lifelong.resources import to_device
from lifelong.strategies.base import (
    Batch,
    FitFn,
    Strategy,
    classification_loss,
    masked_logits,
    register,
)
from lifelong.streams.base import Stream, Task

LABELS = ("hard", "soft")


class VAE(nn.Module):
    """A fully connected variational autoencoder (Kingma & Welling 2014) with Bernoulli outputs.

    Args:
        in_features: size of a flattened input (pixels in [0, 1]).
        hidden: width of the two hidden layers of the encoder and of the decoder (van de Ven
            et al. use 400 on MNIST).
        latent: size of the latent code (van de Ven et al.: 100).
    """

    def __init__(self, in_features: int, hidden: int = 400, latent: int = 100) -> None:
        super().__init__()
        self.in_features, self.latent = in_features, latent
        self.encoder = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.to_mean = nn.Linear(hidden, latent)
        self.to_logvar = nn.Linear(hidden, latent)
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, in_features),
        )

    def loss(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Per-sample negative ELBO: Bernoulli reconstruction (summed over pixels) + KL; the
        reparameterisation noise is drawn on the CPU from ``generator``."""
        h = self.encoder(x)
        mean, logvar = self.to_mean(h), self.to_logvar(h)
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
        z = mean + noise * (0.5 * logvar).exp()
        recon = F.binary_cross_entropy_with_logits(
            self.decoder(z), x.flatten(1), reduction="none"
        ).sum(1)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        return recon + kl

    @torch.no_grad()
    def sample(
        self, n: int, shape: tuple[int, ...], generator: torch.Generator | None = None
    ) -> Tensor:
        """``n`` inputs decoded from the prior (drawn on the CPU from ``generator``): Bernoulli
        means, reshaped to ``shape``."""
        weight = self.to_mean.weight
        z = to_device(
            torch.randn(n, self.latent, generator=generator, dtype=weight.dtype), weight.device
        )
        return torch.sigmoid(self.decoder(z)).reshape(n, *shape)


@register
class GenerativeReplay(Strategy):
    """Deep Generative Replay with a VAE generator (Shin et al. 2017; van de Ven et al. 2020).

    Args:
        ratio: ``r``, the weight of the current task's loss (the rest goes to replay). 0 means
            ``1 / t`` after ``t`` tasks, so that every task seen counts equally (van de Ven &
            Tolias 2019); Shin et al. treat ``r`` as a free parameter.
        labels: ``hard``: replayed inputs get the previous solver's most likely class (Shin et
            al.); ``soft``: the solver is trained to match the previous solver's softened
            outputs, a distillation loss at ``temperature`` multiplied by ``T^2`` (van de Ven et
            al. 2020).
        temperature: distillation temperature for ``soft`` labels (van de Ven et al.: 2).
        hidden: width of the VAE's hidden layers (van de Ven et al.: 400).
        latent: size of the VAE's latent code (van de Ven et al.: 100).
        generator_lr: Adam learning rate of the generator (van de Ven & Tolias 2019: 0.001,
            betas 0.9/0.999).
        generator_iterations: generator training steps after each task (van de Ven & Tolias
            2019: 2000 per task on split MNIST).
        generator_batch_size: real samples per generator step, plus as many replayed ones from
            the second task on (van de Ven & Tolias 2019: 128).
        replay_batch_size: replayed samples per solver step (0: the current batch's size).

    Replayed samples are labelled within the columns of the tasks seen before: in the class
    scenario the columns of all previous classes; in the task scenario each replayed sample is
    assigned one previous task at random and labelled within that task's head; in the domain
    scenario over the shared head. With hard labels the solver's loss on a replayed sample uses
    the same columns as on a real one; with soft labels the target is the previous solver's
    softened distribution over its columns and zero on the others (classes it never saw), over
    the same columns. The generator needs inputs scaled to [0, 1].
    """

    name = "generative-replay"
    description = "deep generative replay: a VAE replays past inputs, the old solver labels them"
    family = "memory"
    train_defaults: ClassVar[dict[str, Any]] = {
        "optimizer": "adam",
        "lr": 0.001,
        "batch_size": 128,
        "iterations": 2000,
    }
    """The solver trains as the generator does, with its own iteration budget per task: 2000
    iterations of Adam (lr 0.001, betas 0.9/0.999) on mini-batches of 128 per task, the
    protocol of van de Ven & Tolias 2019 ("Three scenarios for continual learning", Sec. 3 and
    their code, split MNIST) for solver and generator alike. The run's --lr, --batch-size and
    --epochs do not apply; ``generative-replay:iterations=500,lr=0.01`` changes them."""

    def __init__(
        self,
        ratio: float = 0.0,
        labels: str = "hard",
        temperature: float = 2.0,
        hidden: int = 400,
        latent: int = 100,
        generator_lr: float = 0.001,
        generator_iterations: int = 2000,
        generator_batch_size: int = 128,
        replay_batch_size: int = 0,
    ) -> None:
        checks = [
            (0 <= ratio <= 1, f"ratio must be in [0, 1] (0: 1/tasks seen), got {ratio}"),
            (labels in LABELS, f"labels must be one of {', '.join(LABELS)}, got {labels!r}"),
            (temperature > 0, f"temperature must be positive, got {temperature}"),
            (
                hidden >= 1 and latent >= 1,
                f"hidden and latent must be >= 1, got {hidden}, {latent}",
            ),
            (generator_lr > 0, f"generator_lr must be positive, got {generator_lr}"),
            (
                generator_iterations >= 1,
                f"generator_iterations must be >= 1, got {generator_iterations}",
            ),
            (
                generator_batch_size >= 1,
                f"generator_batch_size must be >= 1, got {generator_batch_size}",
            ),
            (replay_batch_size >= 0, f"replay_batch_size must be >= 0, got {replay_batch_size}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"generative-replay: {message}")
        self.ratio = ratio
        self.labels = labels
        self.temperature = temperature
        self.hidden = hidden
        self.latent = latent
        self.generator_lr = generator_lr
        self.generator_iterations = generator_iterations
        self.generator_batch_size = generator_batch_size
        self.replay_batch_size = replay_batch_size
        self.vae: VAE | None = None  # the generator of the paper (self.generator is the RNG)
        self.generator_optimizer: torch.optim.Optimizer | None = None
        self.previous_solver: nn.Module | None = None
        self.previous_vae: VAE | None = None
        self.old_columns: list[int] = []
        self.tasks_seen = 0
        self.generator_steps = 0

    def prepare(self, model: nn.Module, stream: Stream) -> nn.Module:
        super().prepare(model, stream)
        if stream.input_kind == "tokens":
            raise ConfigError(
                "generative-replay generates images or features, not tokens; use replay"
            )
        device = next(model.parameters()).device
        self.vae = VAE(math.prod(stream.input_shape), self.hidden, self.latent).to(device)
        self.generator_optimizer = self._new_generator_optimizer()
        return model

    def _new_generator_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.vae.parameters(), lr=self.generator_lr, betas=(0.9, 0.999))

    def state_dict(self) -> dict[str, Any]:
        """The generator's optimizer as its ``state_dict`` (plain data, so checkpoints load with
        ``weights_only=True``); :meth:`load_state_dict` rebuilds it on the loaded generator."""
        state = super().state_dict()
        if self.generator_optimizer is not None:
            state["generator_optimizer"] = self.generator_optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("generator_optimizer")
        super().load_state_dict({k: v for k, v in state.items() if k != "generator_optimizer"})
        if isinstance(saved, dict):
            self.generator_optimizer = self._new_generator_optimizer()
            self.generator_optimizer.load_state_dict(saved)

    def before_task(self, task: Task, model: nn.Module) -> None:
        self.tasks_seen = task.id + 1
        if task.id == 0:
            return
        self.previous_solver = copy.deepcopy(model).eval().requires_grad_(False)
        self.previous_vae = copy.deepcopy(self.vae).eval().requires_grad_(False)
        seen = self.stream.tasks[: task.id]
        if self.stream.scenario == "class":
            self.old_columns = torch.cat([t.train.y for t in seen]).unique().tolist()
        else:
            self.old_columns = list(range(*seen[0].columns))

    def _weight(self) -> float:
        return self.ratio if self.ratio > 0 else 1.0 / max(self.tasks_seen, 1)

    def _replay(self, n: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """Replayed inputs, the previous solver's logits, their task ids and column masks."""
        x = self.previous_vae.sample(n, self.stream.input_shape, self.generator)
        if self.stream.scenario == "task":
            task_ids = torch.randint(0, self.tasks_seen - 1, (n,), generator=self.generator)
            task_ids = to_device(task_ids, device)
            mask = self.stream.column_mask(task_ids)
        else:
            task_ids = torch.full((n,), self.tasks_seen - 2, dtype=torch.long, device=device)
            mask = torch.zeros(n, self.stream.n_outputs, dtype=torch.bool, device=device)
            mask[:, to_device(torch.tensor(self.old_columns), device)] = True
        with torch.no_grad():
            teacher = masked_logits(self.forward(self.previous_solver, x, task_ids), mask)
        return x, teacher, task_ids, mask

    def loss(self, model: nn.Module, batch: Batch, task: Task) -> Tensor:
        current = classification_loss(self.forward(model, batch.x, batch.task_ids), batch)
        if self.previous_solver is None:
            return current
        x, teacher, task_ids, mask = self._replay(
            self.replay_batch_size or len(batch), batch.x.device
        )
        logits = self.forward(model, x.to(batch.x.dtype), task_ids)
        # the solver is trained over the same columns as on a real sample (all of them outside
        # the task scenario), so that it also learns not to predict new classes for old inputs
        student_mask = mask if self.stream.scenario == "task" else batch.mask
        if self.labels == "hard":
            replay = F.cross_entropy(masked_logits(logits, student_mask), teacher.argmax(1))
        else:
            # the previous solver's softened distribution over its own columns, zero on the
            # columns it never learned, distilled over the same columns as a real sample
            t = self.temperature
            target = F.softmax(teacher / t, dim=1)
            log_student = F.log_softmax(masked_logits(logits, student_mask) / t, dim=1)
            replay = -(target * log_student.masked_fill(~mask, 0.0)).sum(1).mean() * t * t
        r = self._weight()
        return r * current + (1 - r) * replay

    def after_task(self, task: Task, model: nn.Module, fit: FitFn) -> None:
        """Train the generator on this task's inputs mixed with the previous generator's samples
        (weights ``r`` and ``1 - r``), then drop the frozen copies. After the stream's last task
        no generator is needed any more and none is trained."""
        if task.id == len(self.stream) - 1:
            self.previous_solver = self.previous_vae = None
            return
        self.vae.train()
        data, n = task.train, len(task.train)
        half = self.generator_batch_size
        r = self._weight()
        for _ in range(self.generator_iterations):
            x = data.inputs(
                torch.randint(0, n, (half,), generator=self.generator).to(data.y.device)
            )
            loss = self.vae.loss(x, self.generator).mean()
            if self.previous_vae is not None:
                replayed = self.previous_vae.sample(half, self.stream.input_shape, self.generator)
                loss = r * loss + (1 - r) * self.vae.loss(replayed, self.generator).mean()
            self.generator_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.generator_optimizer.step()
            self.generator_steps += 1
        self.previous_solver = None  # only needed while the next task trains
        self.previous_vae = None

    def info(self) -> dict[str, Any]:
        params = list(self.vae.parameters()) if self.vae else []
        n_gen = sum(p.numel() for p in params)
        return {
            "memory": {
                "stores": "no real data: a VAE generator (and, while a task trains, frozen copies "
                "of the previous solver and generator)",
                "samples": 0,
                "generator_parameters": n_gen,
                "bytes": sum(p.numel() * p.element_size() for p in params),
            },
            "labels": self.labels,
            "generator_steps": self.generator_steps,
        }
