"""docs/tutorial.md cannot rot: its Python blocks run, in order, as one script.

The script runs in a subprocess (the tutorial registers a strategy; the test session's registry
stays as it was). Checked to fail: a typo in a block's API call (``lifelong.learn_streams``)
makes the script, and this test, fail.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


@pytest.mark.slow
def test_tutorial_runs(tmp_path, cli_env):
    pytest.importorskip("pandas")
    pytest.importorskip("tensorboard")
    blocks = python_blocks(TUTORIAL.read_text())
    assert len(blocks) >= 7
    script = tmp_path / "tutorial.py"
    script.write_text("\n\n".join(blocks))
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3 tasks, 10 outputs" in done.stdout
    assert re.search(r"strategy\s+anchor-to-start\s+finetune", done.stdout), done.stdout[-2000:]
