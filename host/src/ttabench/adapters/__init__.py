"""The host's built-in adapters (entry points in the ``ttabench.adapters`` group):

- ``source``: the unadapted model (``ttabench.adapters.source``);
- ``bn-ema`` and ``bn-alpha``: test-batch normalization statistics mixed with the source ones
  (``ttabench.adapters.bn_stats``);
- ``lame``: Laplacian-adjusted maximum likelihood on the outputs (``ttabench.adapters.lame``);
- ``cotta``: mean teacher, augmentation-averaged pseudo-labels, stochastic restore
  (``ttabench.adapters.cotta``);
- ``rotta``: robust batch normalization, a category-balanced memory bank, timeliness
  reweighting, a mean teacher (``ttabench.adapters.rotta``).

The entropy-minimization family (Tent, EATA, SAR, DeYO, ROID...) lives in plugins.
"""

from ttabench.adapters.source import SourceAdapter

__all__ = ["SourceAdapter"]
