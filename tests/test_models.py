"""Model shapes and the parameter counts of the paper."""

from __future__ import annotations

import pytest
import torch

from deep_compression.errors import ConfigError
from deep_compression.models import build_model, count_parameters


@pytest.mark.parametrize(
    ("name", "params"),
    [("lenet-300-100", 266_610), ("lenet-5", 431_080), ("small-cnn", 3_274_634)],
)
def test_parameter_counts_and_output_shape(name: str, params: int) -> None:
    model = build_model(name)
    assert count_parameters(model) == params
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_vgg16_has_the_papers_parameter_count() -> None:
    with torch.device("meta"):  # shapes only: no 553 MB allocation in a unit test
        model = build_model("vgg-16")
    assert count_parameters(model) == 138_357_544
    assert tuple(model.fc6.weight.shape) == (4096, 25088)
    out = model(torch.empty(2, 3, 224, 224, device="meta"))
    assert out.shape == (2, 1000)


def test_lenet5_layers_are_the_caffe_variant() -> None:
    m = build_model("lenet-5")
    assert [tuple(p.shape) for n, p in m.named_parameters() if n.endswith("weight")] == [
        (20, 1, 5, 5),
        (50, 20, 5, 5),
        (500, 800),
        (10, 500),
    ]


@pytest.mark.parametrize("kwargs", [{"dropout": 1.5}, {"dropout": -0.1}, {"width": 3}])
def test_bad_arguments(kwargs) -> None:
    with pytest.raises(ConfigError):
        build_model("lenet-5", **kwargs)


def test_unknown_model() -> None:
    with pytest.raises(ConfigError, match="unknown model 'vgg'.*lenet-5"):
        build_model("vgg")
