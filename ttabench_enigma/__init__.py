"""ttabench_enigma: entropy-minimization adapters and the Weighted Flips accuracy estimator.

Library use (the shape tent, EATA and SAR users know)::

    from ttabench_enigma import RDumb, configure_model, collect_params, weighted_flips

    adapter = RDumb(model)            # one call on a batch = one adaptation step
    logits = adapter(images)          # float images in [0, 1]
"""

from ttabench.api import installed_version
from ttabench_enigma.adapters import EATA, ETA, RDumb, Tent, softmax_entropy
from ttabench_enigma.calibrations import list_calibrations, load_calibration
from ttabench_enigma.estimator import (
    UnweightedFlips,
    WeightedFlips,
    WeightedFlipsSource,
    WeightedFlipsTS,
)
from ttabench_enigma.flips import flip_curve, weighted_flips
from ttabench_enigma.norm import collect_params, configure_model

__version__ = installed_version("ttabench-enigma")

__all__ = [
    "EATA",
    "ETA",
    "RDumb",
    "Tent",
    "UnweightedFlips",
    "WeightedFlips",
    "WeightedFlipsSource",
    "WeightedFlipsTS",
    "collect_params",
    "configure_model",
    "flip_curve",
    "list_calibrations",
    "load_calibration",
    "softmax_entropy",
    "weighted_flips",
]
