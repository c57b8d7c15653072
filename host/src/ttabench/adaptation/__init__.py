"""Pieces the test-time adapters share: dataset families and their optimizer settings, CoTTA's
augmentations in torch, parameter averaging, train/eval modes, the private random generator and
``ResettableAdapter``. Plugins reach them through ``ttabench.api``."""

# ``resettable`` subclasses ``ttabench.api.Adapter`` and ``ttabench.api`` re-exports it: load
# the API first, so importing any module of this package first also works.
import ttabench.api  # noqa: F401
