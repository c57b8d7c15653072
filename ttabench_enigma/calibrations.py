"""The published Weighted Flips calibrations, shipped as JSON in ``calibrations/``.

Each file is a ``ttabench.calibration.Calibration`` (schema ``ttabench.calibration/1``) whose
``id`` equals its file name without ``.json``: the paper's three ResNet-50 maps
(``rn50-v1-wf-quadratic``, ``rn50-v1-u-linear``, ``rn50-v1-u-quadratic``), the stop-step
refits (``rn50-v1-wf-step<N>``) and the probe-size refits (``rn50-v1-wf-probe<N>``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ttabench.api import Calibration, TTABenchError


def _directory() -> Path:
    return Path(str(resources.files("ttabench_enigma") / "calibrations"))


def list_calibrations() -> list[str]:
    """Ids of the shipped calibrations, sorted."""
    return sorted(path.stem for path in _directory().glob("*.json"))


def load_calibration(id_or_path: str | Path) -> Calibration:
    """A shipped calibration by id, or a calibration JSON file by path."""
    shipped = _directory() / f"{id_or_path}.json"
    if isinstance(id_or_path, str) and "/" not in id_or_path and shipped.is_file():
        calibration = Calibration.load(shipped)
        if calibration.id != shipped.stem:
            raise TTABenchError(f"calibration file {shipped}: id {calibration.id!r} is not the "
                                "file's name")
        return calibration
    path = Path(id_or_path)
    if path.is_file():
        return Calibration.load(path)
    raise TTABenchError(
        f"unknown calibration {str(id_or_path)!r}: not a file and not a shipped id; "
        f"shipped ids: {', '.join(list_calibrations())}"
    )


__all__ = ["list_calibrations", "load_calibration"]
