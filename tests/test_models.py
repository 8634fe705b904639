"""Models: MLP and CNN shapes, multi-head output sizes, parameter counts, registry errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lifelong.errors import ConfigError, UnknownNameError
from lifelong.models import CNN, MLP, MODELS, build_model, count_parameters
from lifelong.streams import build_stream, from_tensors


def linear_sizes(model: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]


def test_mlp_widths_and_parameter_count(digits_stream):
    model = build_model("mlp", digits_stream)  # default 100 100 on 8x8 digits, 10 outputs
    assert linear_sizes(model) == [(64, 100), (100, 100), (100, 10)]
    assert count_parameters(model) == 64 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10  # 17,610
    wide = build_model("mlp", digits_stream, hidden=[32, 16, 8])
    assert linear_sizes(wide) == [(64, 32), (32, 16), (16, 8), (8, 10)]
    none = MLP(64, (), 10)  # no hidden layer: logistic regression
    assert linear_sizes(none) == [(64, 10)]
    x = digits_stream.tasks[0].train.inputs(slice(0, 7))
    assert model(x).shape == (7, 10)


def test_multi_head_output_spans_every_head(split_task_stream):
    model = build_model("mlp", split_task_stream, hidden=[20])
    assert split_task_stream.n_outputs == 10
    assert linear_sizes(model)[-1] == (20, 10)
    class_stream = build_stream("split", "digits", tasks=5, scenario="domain", test_samples=10)
    assert linear_sizes(build_model("mlp", class_stream, hidden=[20]))[-1] == (20, 2)


def test_cnn_shapes_on_digits_and_mnist_sized_inputs(digits_stream):
    model = build_model("cnn", digits_stream)
    x = digits_stream.tasks[0].test.inputs(slice(0, 4))
    assert x.shape == (4, 1, 8, 8)
    assert model(x).shape == (4, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 32, (3, 3)),
        (32, 64, (3, 3)),
    ]
    # two 2x2 pools: 8x8 -> 2x2, so the MLP sees 64 * 2 * 2 features
    assert linear_sizes(model) == [(256, 128), (128, 10)]
    big = CNN((1, 28, 28), 5, hidden=(50,))
    assert linear_sizes(big) == [(64 * 7 * 7, 50), (50, 5)]
    assert big(torch.zeros(3, 1, 28, 28)).shape == (3, 5)


def test_same_seed_same_initial_weights(digits_stream):
    torch.manual_seed(5)
    a = build_model("mlp", digits_stream)
    torch.manual_seed(5)
    b = build_model("mlp", digits_stream)
    torch.manual_seed(6)
    c = build_model("mlp", digits_stream)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not all(
        torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True)
    )


def test_registry_errors(digits_stream):
    assert {"mlp", "cnn"} <= set(MODELS)
    with pytest.raises(UnknownNameError, match=r"known: .*cnn.*mlp"):
        build_model("resnet", digits_stream)
    with pytest.raises(ConfigError, match="positive"):
        build_model("mlp", digits_stream, hidden=[10, 0])
    features = from_tensors(
        [(torch.rand(4, 6), torch.arange(4) % 2, torch.rand(2, 6), torch.arange(2))]
    )
    assert features.input_kind == "features"
    with pytest.raises(ConfigError, match=r"use one of: .*mlp") as info:
        build_model("cnn", features)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="too small"):
        CNN((1, 2, 2), 10)
