"""Embedding-drift analysis of entropy minimization ("The Entropy Enigma", the analysis half).

``metrics``: pure functions (silhouette, shift distance, prototype distance, class means);
``trajectory``: the metrics along one adaptation trajectory, phase summaries, the exclusion
experiment; ``plots``: PNG figures; ``cli``: the ``ttabench analyze`` command.
"""

from ttabench_enigma.analysis.metrics import (
    class_means,
    prototype_distance,
    shift_distance,
    silhouette,
)
from ttabench_enigma.analysis.trajectory import (
    analyze_trajectory,
    exclusion_experiment,
    phase_summary,
    sweep_correlations,
)

__all__ = [
    "analyze_trajectory",
    "class_means",
    "exclusion_experiment",
    "phase_summary",
    "prototype_distance",
    "shift_distance",
    "silhouette",
    "sweep_correlations",
]
