"""The single-neuron subset selection: exact DP vs brute force, greedy, CSV input."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deep_compression.errors import ConfigError
from deep_compression.neuron import (
    read_neuron_csv,
    reduce_neuron,
    solve_exact,
    solve_greedy,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "weights.csv"


def brute_force_removable(c: np.ndarray, tol: float) -> int:
    """The most inputs whose contributions sum to within ``tol`` of 0 (all subsets)."""
    for m in range(len(c), -1, -1):
        for subset in itertools.combinations(range(len(c)), m):
            if abs(math.fsum(c[list(subset)])) <= tol:
                return m
    raise AssertionError("the empty set always fits")


@pytest.mark.parametrize("seed", range(6))
def test_exact_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    proved = 0
    for _ in range(40):
        n = int(rng.integers(1, 11))
        w, x = rng.normal(size=n), rng.normal(size=n)
        c = w * x
        tol = float(abs(rng.normal()) * rng.choice([0.01, 0.1, 1.0]))
        r = reduce_neuron(w, x, tol, bias=float(rng.normal()), method="exact")
        best = brute_force_removable(c, tol)
        assert r.error <= tol  # always feasible
        assert r.removed <= best <= r.upper_bound  # the bounds bracket the optimum
        if r.proved_optimal:
            proved += 1
            assert r.removed == best
    assert proved >= 38  # almost always proved on continuous data


def test_exact_on_cancelling_integers() -> None:
    # c = 3, -3, 2, 2, -4, 5, 0, -6 (sum -1); by hand: {3, -3, 2, 2, -4, 0} cancels
    # exactly, and no 7 inputs do (that would need an input of -1).
    w = np.array([3.0, -3.0, 1.0, 2.0, -2.0, 5.0, 0.0, -3.0])
    x = np.array([1.0, 1.0, 2.0, 1.0, 2.0, 1.0, 7.0, 2.0])
    r = reduce_neuron(w, x, 0.0, method="exact")
    assert r.removed == brute_force_removable(w * x, 0.0) == 6
    assert r.kept.tolist() == [False, False, False, False, False, True, False, True]
    assert r.error == 0.0 and r.proved_optimal


def test_greedy_is_feasible_and_never_beats_the_optimum() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(1, 10))
        c = rng.normal(size=n)
        tol = float(abs(rng.normal()) * 0.3)
        removed = solve_greedy(c, tol)
        assert abs(math.fsum(c[removed])) <= tol
        assert removed.sum() <= brute_force_removable(c, tol)


def test_auto_falls_back_to_greedy_and_says_so() -> None:
    rng = np.random.default_rng(1)
    w, x = rng.normal(size=3000), rng.normal(size=3000)
    r = reduce_neuron(w, x, 0.01)
    assert r.method == "greedy" and not r.proved_optimal and r.upper_bound is None
    assert r.error <= 0.01 and r.removed > 2000
    assert "GREEDY" in r.describe() and "no optimality guarantee" in r.describe()
    with pytest.raises(ConfigError, match="use the greedy method"):
        reduce_neuron(w, x, 0.01, method="exact")


def test_all_zero_contributions_and_budget_exhaustion() -> None:
    removed, proved, upper, _ = solve_exact(np.zeros(4), 0.0)
    assert removed.all() and proved and upper == 4
    # tolerance 0 with continuous data: the refinement cannot prove anything before the
    # cell budget runs out; the answer is feasible and labelled as not proved.
    c = np.array([0.3, -0.1, -0.2000001, 0.7])
    removed, proved, upper, _ = solve_exact(c, 0.0, max_cells=10_000)
    assert abs(math.fsum(c[removed])) == 0.0
    assert removed.sum() <= upper


def test_describe_reports_outputs() -> None:
    r = reduce_neuron(np.array([1.0, 0.01, -0.012]), np.array([1.0, 1.0, 1.0]), 0.005, bias=0.5)
    text = r.describe()
    assert r.kept.tolist() == [True, False, False]
    assert "kept 1 of 3 inputs, removed 2" in text and "proved optimal" in text
    assert f"full {1.5 - 0.002:.6g}" in text and "reduced 1.5" in text


def test_reads_the_example_and_formats(tmp_path: Path) -> None:
    w, x = read_neuron_csv(EXAMPLE)
    assert w.shape == x.shape and len(w) >= 10
    messy = tmp_path / "m.csv"
    messy.write_text("  weight , input \n\n 0.5 ,  2\n# comment\n-1e-1,3.0\n\n")
    w, x = read_neuron_csv(messy)
    assert w.tolist() == [0.5, -0.1] and x.tolist() == [2.0, 3.0]
    (tmp_path / "noheader.csv").write_text("1,2\n3,4\n")
    assert read_neuron_csv(tmp_path / "noheader.csv")[0].tolist() == [1.0, 3.0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no data rows"),
        ("weight,input\n", "no data rows"),
        ("weight,input\n0.5\n", "line 2: expected 2 columns"),
        ("0.5,1,2\n", "line 1: expected 2 columns"),
        ("weight,input\n0.5,abc\n", "line 2: input 'abc' is not a number"),
        ("1,2\nx,2\n", "line 2: weight 'x' is not a number"),
        ("w,x\n1,2\n0.5,nan\n", "line 3: input 'nan' is not a finite number"),
        ("w,x\ninf,1\n", "line 2: weight 'inf' is not a finite number"),
        ("w,x\n1,\n", "line 2: missing value"),
    ],
)
def test_bad_csv_names_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        read_neuron_csv(path)
    assert "\n" not in str(info.value)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="tolerance"):
        reduce_neuron(np.ones(2), np.ones(2), -1.0)
    with pytest.raises(ConfigError, match="equal-length"):
        reduce_neuron(np.ones(2), np.ones(3), 0.1)
    with pytest.raises(ConfigError, match="method"):
        reduce_neuron(np.ones(2), np.ones(2), 0.1, method="magic")


def test_neuron_module_does_not_import_torch() -> None:
    code = (
        "import sys; import deep_compression.neuron as n; "
        "n.reduce_neuron([1.0], [2.0], 0.1); assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
