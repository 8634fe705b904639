"""The text models are registered by importing lifelong.models alone (no strategies needed)."""

from __future__ import annotations

import subprocess
import sys


def test_text_models_registered_without_importing_strategies():
    code = (
        "from lifelong.models import MODELS; import sys; "
        "assert 'lifelong.strategies' not in sys.modules; print(sorted(MODELS))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "'lm'" in out.stdout and "'memnet'" in out.stdout


def test_default_model_follows_the_stream_inputs():
    from lifelong.config import RunConfig
    from lifelong.models import default_model

    assert default_model("image") == "mlp" and default_model("tokens") == "memnet"
    assert RunConfig(data="babi", stream="babi").model == "memnet"
    assert RunConfig(data="digits", stream="permuted").model == "mlp"
    assert RunConfig(data="digits", stream="permuted", model="cnn").model == "cnn"
