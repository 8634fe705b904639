"""The lecture's figures: each test checks a property of the data a picture draws.

Every picture is computed by the library's own code; these tests check that what is drawn says
what the lecture says, so a broken strategy, projection or metric shows up as a wrong picture.
Checked by breaking the guarded code once (noted per test).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lifelong.errors import ConfigError
from lifelong.figures import evaluation, gem, landscape, qa
from lifelong.figures.toy import TwoWeights, loss_surface
from lifelong.metrics import summarize
from lifelong.runner import learn_stream
from lifelong.streams import build_stream
from lifelong.train import TrainConfig


@pytest.fixture(scope="module")
def land() -> landscape.Landscape:
    return landscape.compute(seed=0)


def test_loss_surface_is_the_models_exact_loss() -> None:
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(50, 2, generator=gen), torch.randint(0, 2, (50,), generator=gen)
    points = torch.tensor([[0.0, 0.0], [1.5, -2.0], [-3.0, 0.25]])
    for point, value in zip(points, loss_surface(x, y, points, chunk=2), strict=True):
        expected = F.cross_entropy(TwoWeights(point.tolist())(x), y)
        assert value.item() == pytest.approx(expected.item(), rel=1e-5)


def test_landscape_ewc_keeps_task_one_where_sgd_forgets_it(land, tmp_path) -> None:
    """EWC's path ends with a much lower task-1 loss than SGD's; it learns more of task 2 than L2
    at a similar task-1 loss; its importance marks w₁ as the parameter task 1 needs. (With EWC's
    penalty switched off in ``AnchoredStrategy.loss``/``after_backward`` the EWC path is SGD's and
    the first assertion fails; with the Fisher replaced by ones, the importance check fails.)"""
    sgd, l2, ewc = (land.end_losses[label] for label in land.paths)
    assert ewc[0] < 0.6 * sgd[0]  # task 1 kept
    assert sgd[1] < ewc[1] < l2[1]  # task 2: SGD learns it best, L2 worst (intransigence)
    assert abs(l2[0] - ewc[0]) < 0.05  # ... at about the same protection of task 1
    assert land.importance[0] > 5 * land.importance[1]
    for path in land.paths.values():  # every task-2 path starts at θᵇ
        np.testing.assert_allclose(path[0], land.theta_b)
    np.testing.assert_allclose(land.task1_path[0], land.theta0)
    # the surfaces are the losses at the mesh points: θᵇ sits in task 1's valley
    assert land.surfaces[0].min() < sgd[0]
    png = landscape.draw(land, tmp_path / "landscape.png")
    assert png.stat().st_size > 10_000


def test_gem_projection_agrees_with_every_old_task(tmp_path) -> None:
    """g conflicts with both old gradients; GEM's g′ satisfies g′·gᵏ ≥ 0 for each and is the
    closest such vector (checked against a dense search); A-GEM's g̃ only satisfies the average
    constraint. (Returning g unprojected from ``solve_gem_dual`` fails the second assertion.)"""
    data = gem.compute(seed=0)
    assert (data.old @ data.g < 0).all()
    scale = float(np.abs(data.old).max())
    assert (data.old @ data.gem >= -1e-5 * scale**2).all()
    # optimality: no feasible vector on a fine grid is closer to g than g′
    axis = np.linspace(-0.5, 0.5, 401)
    z = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
    feasible = z[(z @ data.old.T >= 0).all(axis=1)]
    best = np.linalg.norm(feasible - data.g, axis=1).min()
    assert np.linalg.norm(data.gem - data.g) <= best + 1e-6
    # A-GEM: the average constraint holds with equality, an individual one is broken
    np.testing.assert_allclose(data.reference, data.old.mean(0), rtol=1e-5)
    assert data.agem @ data.reference == pytest.approx(0.0, abs=1e-6)
    assert (data.old @ data.agem).min() < 0
    assert gem.draw(data, tmp_path / "gem.png").stat().st_size > 10_000


@pytest.mark.parametrize("tasks", [2, 3, 5])
def test_evaluation_marks_exactly_the_cells_the_metrics_use(tasks: int) -> None:
    """The cells the figure marks reproduce ACC, BWT and FWT of :mod:`lifelong.metrics` on any
    matrix. (Marking R[j, j] one row too early, ``(j, j)`` for ``(j + 1, j)``, fails this.)"""
    rng = np.random.default_rng(tasks)
    for _ in range(5):
        matrix = rng.random((tasks + 1, tasks))
        values = evaluation.values_from_cells(matrix, evaluation.metric_cells(tasks))
        expected = summarize(matrix)
        for key in ("acc", "bwt", "fwt"):
            assert values[key] == pytest.approx(expected[key])


def test_evaluation_figure_of_a_real_run(tmp_path) -> None:
    data, result = evaluation.compute(seed=0, tasks=3, epochs=1)
    assert data.values["acc"] == pytest.approx(result.metrics()["acc"])
    assert data.values["bwt"] == pytest.approx(result.metrics()["bwt"])
    assert data.values["fwt"] == pytest.approx(result.metrics()["fwt"])
    cells = data.cells
    assert len(cells.acc) == 3 and len(cells.bwt) == 2 and len(cells.fwt) == 2
    assert all(r == 3 for r, _ in cells.acc)
    assert evaluation.draw(data, tmp_path / "evaluation.png").stat().st_size > 10_000


@pytest.fixture(scope="module")
def small_results() -> dict:
    """A real finetune + joint run, three permuted-digit tasks, as results.json holds it."""
    from lifelong.results import RunResults

    stream = build_stream("permuted", "digits", tasks=3, train_samples=300, seed=0)
    results = RunResults(config={"seed": 0}, stream=stream.describe())
    for name in ("finetune", "joint"):
        results.strategies[name] = learn_stream(
            stream, name, train=TrainConfig(epochs=1, lr=0.05), seed=0
        )
    return results.to_dict()


def test_qa_picture_reads_sequential_and_multitask_runs(small_results, tmp_path) -> None:
    """The bars are the run's own numbers: their means are ACC and BWT of the sequential run and
    ACC of the multitask one. (Taking ``just_learned`` from row j instead of j + 1 fails.)"""
    data = qa.compute(small_results)
    fine, joint = small_results["strategies"]["finetune"], small_results["strategies"]["joint"]
    assert data.labels == ("finetune", "joint")
    assert data.after_all.mean() == pytest.approx(fine["acc"])
    assert (data.after_all - data.just_learned)[:-1].mean() == pytest.approx(fine["bwt"])
    assert data.multitask.mean() == pytest.approx(joint["acc"])
    assert data.tasks == [t["name"] for t in small_results["stream"]["tasks"]]
    assert qa.draw(data, tmp_path / "qa.png").stat().st_size > 10_000


def test_qa_without_a_multitask_run_is_one_clear_error(small_results) -> None:
    only_sequential = {
        **small_results,
        "strategies": {"finetune": small_results["strategies"]["finetune"]},
    }
    with pytest.raises(ConfigError, match="no complete 'joint' strategy"):
        qa.compute(only_sequential)
    with pytest.raises(ConfigError, match="no strategy 'nope'"):
        qa.compute(small_results, sequential="nope")


def test_occlusion_hides_one_square_per_image_and_leaves_the_clean_task_whole() -> None:
    stream = build_stream("noisy", "digits", seed=0, occlusion=[4, 0])
    occluded, clean = (t.test.inputs()[:, 0] for t in stream.tasks)
    source = build_stream("noisy", "digits", seed=0, noise=[0.0, 0.0]).tasks[0].test.inputs()[:, 0]
    assert [t.name for t in stream.tasks] == ["occlusion 4x4", "clean"]
    torch.testing.assert_close(clean, source)
    changed = occluded != source
    assert (occluded[changed] == 0).all()  # only erased pixels differ
    for image, original in itertools.islice(zip(occluded, source, strict=True), 50):
        # some 4x4 window of the image is all zero, and outside it the image is the source's
        windows = [
            (r, c)
            for r, c in itertools.product(range(5), range(5))
            if (image[r : r + 4, c : c + 4] == 0).all()
            and torch.equal(
                torch.where(
                    torch.zeros(8, 8, dtype=torch.bool).index_fill(0, torch.arange(r, r + 4), True)
                    & torch.zeros(8, 8, dtype=torch.bool).index_fill(
                        1, torch.arange(c, c + 4), True
                    ),
                    0.0,
                    original,
                ),
                image,
            )
        ]
        assert windows


def test_occlusion_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="between 0 and 8"):
        build_stream("noisy", "digits", occlusion=[9, 0])
    with pytest.raises(ConfigError, match="one of each per task"):
        build_stream("noisy", "digits", occlusion=[4, 0], noise=[0.1, 0.0, 0.0])
    with pytest.raises(ConfigError, match="integers"):
        build_stream("noisy", "digits", occlusion=[2.5, 0])
