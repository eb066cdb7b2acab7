"""The original project's single-neuron "reduce": the smallest subset of a neuron's
inputs that keeps its pre-activation within a tolerance (numpy only, no torch).

Not a stage of the network pipeline (that is :mod:`deep_compression.prune`); the
``neuron`` command runs it on one neuron's ``weight,input`` rows.
"""

from deep_compression.neuron.io import read_neuron_csv
from deep_compression.neuron.reduce import (
    MAX_DP_CELLS,
    NeuronReduction,
    reduce_neuron,
    solve_exact,
    solve_greedy,
)

__all__ = [
    "MAX_DP_CELLS",
    "NeuronReduction",
    "read_neuron_csv",
    "reduce_neuron",
    "solve_exact",
    "solve_greedy",
]
