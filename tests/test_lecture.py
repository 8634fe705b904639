"""The lecture on screen: ``lifelong demo`` and ``lifelong figure all`` end to end, and their pages
(the demo report, a run report, the gallery) opened in a real browser, headless Chromium.

The demo and the gallery are made once per module (about a minute of CPU together) and shared by
the tests. The browser test is skipped with a one-line reason where no Chromium is found; CI
installs Debian's ``chromium`` and sets ``LIFELONG_REQUIRE_BROWSER=1``, which turns that skip into
a failure, so CI always runs it.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
from pathlib import Path

import pytest

from lifelong.cli import main
from lifelong.figures import FIGURES
from lifelong.figures.forgetting import LECTURE

pytestmark = pytest.mark.slow


def _cli(argv: list[str]) -> tuple[int, str]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(argv)
    return code, buffer.getvalue()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("lecture") / "demo"
    code, stdout = _cli(["demo", "--out", str(out), "--quiet"])
    assert code == 0
    return out, stdout


@pytest.fixture(scope="module")
def gallery(demo, tmp_path_factory) -> tuple[Path, str]:
    """``figure all``; ``qa`` is drawn from the demo's permuted run (finetune and joint)."""
    out = tmp_path_factory.mktemp("lecture") / "figures"
    code, stdout = _cli(
        ["figure", "all", "--out", str(out), "--results", str(demo[0] / "permuted")]
    )
    assert code == 0
    return out, stdout


def test_demo_tells_the_first_example_with_seeds_beside_the_lecture(demo) -> None:
    """The first example forgets: mean BWT over five seeds clearly below zero (more than two
    standard errors), the joint model above fine-tuning, and the lecture's numbers printed
    beside ours."""
    out, stdout = demo
    summary = json.loads((out / "first-example" / "summary.json").read_text())
    n = len(summary["seeds"])
    assert n >= 5
    bwt_mean, bwt_std = summary["bwt"]["mean"], summary["bwt"]["std"]
    assert bwt_mean + 2 * bwt_std / math.sqrt(n) < 0
    assert summary["acc"]["joint"]["mean"] > summary["acc"]["finetune"]["mean"]
    task1 = [summary["stages"][s]["mean"][0] for s in ("after task 1", "after task 2", "joint")]
    assert task1[1] < task1[0] and task1[1] < task1[2]  # falls after task 2; joint keeps it
    # a study: every strategy complete on every seed, each seed an ordinary run folder
    study = json.loads((out / "first-example" / "results.json").read_text())
    for label in ("finetune", "joint"):
        entry = study["strategies"][label]
        assert entry["status"] == "complete" and entry["n"] == n
        for seed, folder in entry["units"].items():
            unit = json.loads((out / "first-example" / folder / "results.json").read_text())
            assert unit["config"]["seed"] == int(seed)
    assert study["strategies"]["finetune"]["mean"]["bwt"] == pytest.approx(bwt_mean)
    # printed: ours (mean ± std) and the lecture's four numbers and joint
    assert f"BWT {100 * bwt_mean:+.1f} ± {100 * bwt_std:.1f} points" in stdout
    table = stdout.split("1. The lecture's first example", 1)[1].split("2. Five", 1)[0]
    for stage, (a, b) in LECTURE.items():
        line = next(row for row in table.splitlines() if row.strip().startswith(stage))
        mean = summary["stages"][stage]["mean"]
        assert line.split()[-2:] == [f"{100 * a:.0f}", f"{100 * b:.0f}"]
        assert f"{100 * mean[0]:.1f} ±" in line and f"{100 * mean[1]:.1f} ±" in line
    assert stdout.strip().splitlines()[-1] == f"report:  {out / 'report.html'}"


def test_demo_permuted_and_plasticity_stories(demo) -> None:
    out, _ = demo
    permuted = json.loads((out / "permuted" / "results.json").read_text())["strategies"]
    assert permuted["finetune"]["bwt"] < -0.2  # the story the demo tells
    assert permuted["joint"]["acc"] > permuted["finetune"]["acc"] + 0.2
    plasticity = json.loads((out / "plasticity" / "results.json").read_text())["strategies"]
    assert len(plasticity) == 3 and (out / "plasticity" / "plasticity.png").stat().st_size > 10_000
    html = (out / "report.html").read_text()
    assert html.count("<img ") == 3  # three stories, one picture each, before the details
    assert (
        html.index("<h2>1.") < html.index("<h2>2.") < html.index("<h2>3.") < html.index("Details")
    )


def test_figure_all_writes_every_figure_and_the_gallery(gallery) -> None:
    out, stdout = gallery
    page = (out / "index.html").read_text()
    for name in FIGURES:
        assert f"{name}: " in stdout and "not drawn" not in stdout
        assert f'id="{name}"' in page
    assert page.count("<img ") == len(FIGURES)
    assert page.count("The lecture:") == len(FIGURES) == page.count("Our run:")
    assert "<script" not in page and 'src="http' not in page  # self-contained


def test_figure_errors_are_one_line(tmp_path, capsys) -> None:
    code = main(["figure", "nosuch", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "unknown figure 'nosuch'" in err
    code = main(["figure", "qa", "--out", str(tmp_path), "--results", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "results.json not found" in err


# ---- in a real browser ------------------------------------------------------------------------
def _chromium() -> str:
    """The Chromium executable, or skip (fail under LIFELONG_REQUIRE_BROWSER) with the reason."""
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "the playwright package is not installed (pip install -e '.[dev]')"
    executable = os.environ.get("LIFELONG_CHROMIUM") or next(
        (p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))),
        None,
    )
    if reason is None and executable is None:
        reason = "no Chromium found (apt-get install chromium, or set LIFELONG_CHROMIUM)"
    if reason is not None:
        if os.environ.get("LIFELONG_REQUIRE_BROWSER"):
            pytest.fail(f"LIFELONG_REQUIRE_BROWSER is set but {reason}")
        pytest.skip(reason)
    return executable  # type: ignore[return-value]


def _open(browser, path: Path) -> tuple[list[str], list[dict], str]:
    """Console errors, every image's load state and size, and the page's text."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri(), wait_until="load")
    images = page.evaluate(
        "Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, "
        "width: i.naturalWidth, height: i.naturalHeight}))"
    )
    text = page.inner_text("body")
    page.close()
    return errors, images, text


def test_pages_render_in_headless_chromium(demo, gallery) -> None:
    """The demo report, a run report and the gallery: no console error, every image loaded with
    a real size, and the key numbers in the page text."""
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    out, _ = demo
    summary = json.loads((out / "first-example" / "summary.json").read_text())
    permuted = json.loads((out / "permuted" / "results.json").read_text())["strategies"]
    bwt = summary["bwt"]
    pages = {
        out / "report.html": [
            f"BWT {100 * bwt['mean']:+.1f} ± {100 * bwt['std']:.1f} points",
            f"ACC {100 * permuted['finetune']['acc']:.1f} %",
            "lecture: task 1",
        ],
        out / "permuted" / "report.html": [
            f"{100 * permuted[label]['acc']:.2f}" for label in ("finetune", "joint")
        ],
        gallery[0] / "index.html": ["The lecture:", "Our run:", "EWC's importance after task 1"],
    }
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            for path, numbers in pages.items():
                errors, images, text = _open(browser, path)
                assert errors == [], f"{path.name}: console errors {errors}"
                assert images, f"{path.name} shows no image"
                for image in images:
                    assert image["complete"] and image["width"] >= 200 and image["height"] >= 150, (
                        f"{path}: image {image['alt']!r} did not load at a real size: {image}"
                    )
                for number in numbers:
                    assert number in text, f"{path}: {number!r} not in the page text"
        finally:
            browser.close()
