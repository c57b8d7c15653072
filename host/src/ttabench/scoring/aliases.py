"""Entries that repeat another entry's numbers exactly, shown once.

Two entries of one (suite, model, adapter) group are the same when their estimates are equal
on every (target, eval cell) pair they are scored on, e.g. ``<est>[best] (lin)`` when the
best calibration score is the main value, so ``<est> (lin)`` again. The best-ranked of such
a set is shown; the others are listed as its aliases.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

GROUP = ["suite", "model", "adapter"]


def find_aliases(table: pd.DataFrame, pairs: pd.DataFrame) -> dict[tuple[Any, ...], str]:
    """``(suite, model, adapter, entry) -> the entry it repeats``, for every alias.

    ``table`` is a leaderboard table (its ``rank`` orders the entries), ``pairs`` its
    (entry, target, key, estimate) rows.
    """
    ranks = {}
    for r in table.dropna(subset=["rank"]).itertuples(index=False):
        ranks[(r.suite, r.model, r.adapter, r.entry)] = int(r.rank)
    signatures: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for keys, part in pairs.groupby([*GROUP, "entry"], sort=False):
        rows = sorted(zip(part["target"], part["key"], part["estimate"]))
        signatures[tuple(keys)] = tuple(rows)
    aliases: dict[tuple[Any, ...], str] = {}
    seen: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for keys in sorted(signatures, key=lambda k: (k[:3], ranks.get(k, 10**9), k[3])):
        found = seen.setdefault((*keys[:3], signatures[keys]), keys)
        if found != keys:
            aliases[keys] = found[3]
    return aliases
