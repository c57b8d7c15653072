"""Pieces the test-time adapters share: dataset families and their optimizer settings, CoTTA's
augmentations in torch, parameter averaging, train/eval modes and the private random generator
(``ResettableAdapter``, the base they serve, is a contract of ``ttabench.api``). Plugins reach
them through ``ttabench.api``."""
