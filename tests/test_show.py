"""`lifelong show`: settings read from signatures and docstrings, never hand-maintained.

Checked to fail: with the ``Args:`` parser returning nothing, the meanings are empty and
``test_show_ewc_lists_every_setting`` fails; with the signature's defaults dropped, so does it.
"""

from __future__ import annotations

import pytest

from lifelong.cli import main
from lifelong.show import doc_sections, first_sentence, strategy_settings
from lifelong.strategies import STRATEGIES


def test_show_ewc_lists_every_setting(capsys):
    assert main(["show", "ewc"]) == 0
    out = capsys.readouterr().out
    assert "Kirkpatrick et al. 2017" in out
    rows = {line.split()[0]: line.split(None, 3) for line in out.splitlines()[5:] if line.strip()}
    assert rows["lambda"][1:3] == ["float", "1.0"]
    assert "importance of old tasks" in rows["lambda"][3]
    assert rows["fisher"][1:3] == ["str", "'true'"]
    assert "predictive distribution" in rows["fisher"][3]
    assert rows["fisher_samples"][1:3] == ["int", "0"]
    assert "averaged over" in rows["fisher_samples"][3]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_setting_is_documented(name):
    """Each hyperparameter has a meaning in its class's ``Args:`` section (the listing is only
    as good as the docstrings, so a new undocumented setting fails here)."""
    for row in strategy_settings(STRATEGIES[name]):
        assert row.meaning, f"{name}: setting {row.name!r} has no Args: entry in the docstring"


def test_show_stream_and_model_and_unknown(capsys):
    assert main(["show", "split"]) == 0
    out = capsys.readouterr().out
    assert "classes_per_task" in out and "Zenke et al. 2017" in out
    assert main(["show", "mlp"]) == 0
    assert "--hidden" in capsys.readouterr().out
    assert main(["show", "ewk"]) == 2
    assert "unknown strategy, stream or model 'ewk'" in capsys.readouterr().err


def test_docstring_sections_and_sentences():
    doc = """Title.

    Args:
        alpha, beta: two weights. More text
            continued here.
        gamma (int, default 3): a count.

    Returns:
        nothing.
    """
    sections = doc_sections(doc)
    assert sections["Args"] == {
        "alpha, beta": "two weights. More text continued here.",
        "gamma": "(int, default 3) a count.",
    }
    assert first_sentence("as in Kirkpatrick et al. 2017, e.g. MNIST. Then more.") == (
        "as in Kirkpatrick et al. 2017, e.g. MNIST."
    )
