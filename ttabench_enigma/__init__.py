"""ttabench_enigma: entropy-minimization adapters and the Weighted Flips accuracy estimator."""

from ttabench_enigma.adapters import EATA, ETA, RDumb, Tent, softmax_entropy
from ttabench_enigma.norm import collect_params, configure_model

__version__ = "0.1.0"

__all__ = [
    "EATA",
    "ETA",
    "RDumb",
    "Tent",
    "collect_params",
    "configure_model",
    "softmax_entropy",
]
