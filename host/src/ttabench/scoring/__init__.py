"""Scoring accuracy estimators against true accuracy, and leaderboards.

``build_leaderboard(cells)`` scores every estimator of finished cells (fitting
score-to-accuracy maps on calibration cells where needed), ``write_leaderboard`` writes the
tables and the scatter plot, ``format_console`` gives the end-of-run summary.
"""

from ttabench.scoring.leaderboard import (
    Leaderboard,
    build_leaderboard,
    format_console,
    load_cells,
    write_leaderboard,
)

__all__ = ["Leaderboard", "build_leaderboard", "format_console", "load_cells", "write_leaderboard"]
