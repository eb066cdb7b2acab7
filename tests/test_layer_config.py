import pytest

from deep_compression.errors import ConfigError
from deep_compression.layer_config import check_patterns, resolve


def test_most_specific_wins() -> None:
    cfg = {"*": 5, "conv*": 8, "conv1": 4, "c*": 7}
    assert resolve(cfg, "conv1") == 4
    assert resolve(cfg, "conv2") == 8
    assert resolve(cfg, "cls") == 7
    assert resolve(cfg, "fc1") == 5


def test_missing_default() -> None:
    with pytest.raises(ConfigError, match="fc1"):
        resolve({"conv*": 8}, "fc1", "bits")


def test_typo_rejected() -> None:
    with pytest.raises(ConfigError, match="'fc4' matches no layer"):
        check_patterns({"*": 1, "fc4": 2}, ["fc1", "fc2"], "bits")
