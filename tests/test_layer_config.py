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


class _Linear:
    pass


class _Conv2d:
    pass


class _Depthwise(_Conv2d):  # a subclass counts as its base type
    pass


NESTED = {
    "conv1": _Conv2d(),
    "layer1.0.conv1": _Conv2d(),
    "layer1.0.conv2": _Depthwise(),
    "layer1.0.shortcut.conv": _Conv2d(),
    "blocks.3.mlp.fc1": _Linear(),
    "head": _Linear(),
}


def test_nested_names_and_types() -> None:
    """A dotless pattern reaches nested layers by their last name; a type key selects by
    class (bases included); a dotted pattern matches full names; exact names win."""
    cfg = {"*": 1, "conv*": 2, "type:_Linear": 3, "layer1.*": 4, "layer1.0.conv2": 5}
    from deep_compression.layer_config import layer_kinds

    kinds = layer_kinds(NESTED)
    got = {n: resolve(cfg, n, "bits", kinds[n]) for n in NESTED}
    assert got == {
        "conv1": 2,
        "layer1.0.conv1": 4,  # full-name pattern beats last-part pattern
        "layer1.0.conv2": 5,
        "layer1.0.shortcut.conv": 4,
        "blocks.3.mlp.fc1": 3,
        "head": 3,
    }
    assert (
        resolve({"*": 0, "type:_Conv2d": 9}, "layer1.0.conv2", "bits", kinds["layer1.0.conv2"]) == 9
    )
    check_patterns(cfg, NESTED, "bits")
    # A name without wildcards is exact: "conv1" is the top-level layer only.
    assert resolve({"*": 0, "conv1": 7}, "layer1.0.conv1", "bits", kinds["layer1.0.conv1"]) == 0
    assert resolve({"*": 0, "conv1": 7}, "conv1", "bits", kinds["conv1"]) == 7
    with pytest.raises(ConfigError, match="'type:Conv1d' matches no layer"):
        check_patterns({"type:Conv1d": 1}, NESTED, "bits")
