"""ttabench_enigma: entropy-minimization adapters and the Weighted Flips accuracy estimator."""

__version__ = "0.1.0"
