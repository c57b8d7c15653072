"""The per-window table: every window of every finished cell, scored as a cell of its own.

A cell's stream is cut into windows of ``W`` steps (``ttabench.records.WindowRecord``); window
``w`` of cell ``c`` becomes a cell with the target ``adapted`` set to that window's online
accuracy and, for every estimator that gave one, its result for that window. The windows keep
their cell's dataset and role, so the usual table (``ttabench.scoring.leaderboard``) scores
them: per-dataset averaged MAE, maps of score estimators fitted on the calibration windows,
the baseline chosen on them leaving out a dataset's windows together (leave-one-dataset-out),
intervals resampling datasets (a stream cell's dataset is its split order: orders, then the
windows of every seed within them).
"""

from __future__ import annotations

from dataclasses import replace

from ttabench.records import Cell, EstimatorRecord

#: What every window estimate estimates: the adapted model's online accuracy in the window.
WINDOW_TARGET = "adapted"


def window_cells(cells: list[Cell]) -> list[Cell]:
    """The windows of the finished ``cells`` as cells (key ``<key>:w<w>``, split name
    ``<split> w<w>``); cells without a window record give none."""
    out = []
    for cell in cells:
        if cell.status != "ok" or cell.windows is None:
            continue
        for w, accuracy in enumerate(cell.windows.accuracy):
            estimators = {
                name: EstimatorRecord(target=WINDOW_TARGET, kind=rec.kind, role=rec.role,
                                      params=rec.params, plugin=rec.plugin,
                                      trajectory=rec.trajectory, input=rec.input,
                                      result=rec.windows[w])
                for name, rec in cell.estimators.items()
                if rec.skipped is None and w < len(rec.windows)}
            out.append(replace(cell, key=f"{cell.key}:w{w}",
                               split={**cell.split, "name": f"{cell.split.get('name')} w{w}"},
                               targets={WINDOW_TARGET: accuracy}, estimators=estimators,
                               windows=None))
    return out
