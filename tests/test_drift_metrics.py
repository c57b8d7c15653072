"""Drift metrics on constructed embeddings where the answer is known."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch

from ttabench.errors import TTABenchError
from ttabench_enigma.analysis.metrics import (
    class_means,
    kmeans,
    matched_distance,
    mean_entropy,
    prototype_distance,
    shift_distance,
    silhouette,
)
from ttabench_enigma.analysis.trajectory import phase_summary, sweep_correlations

K, D, PER_CLASS = 4, 8, 50


def clusters(offset: np.ndarray | None = None, spread: float = 0.05, seed: int = 0):
    """PER_CLASS points around each of K well-separated means (optionally all moved by offset)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(K, D)) * 10
    labels = np.repeat(np.arange(K), PER_CLASS)
    points = means[labels] + rng.normal(size=(len(labels), D)) * spread
    if offset is not None:
        points = points + offset
    return points, labels, means


def plain_silhouette(x: np.ndarray, assigned: np.ndarray) -> float:
    """Textbook silhouette, one point at a time."""
    scores = []
    for i in range(len(x)):
        d = np.sqrt(((x - x[i]) ** 2).sum(axis=1))
        own = assigned == assigned[i]
        if own.sum() == 1:
            scores.append(0.0)
            continue
        a = d[own].sum() / (own.sum() - 1)
        b = min(d[assigned == c].mean() for c in np.unique(assigned) if c != assigned[i])
        scores.append((b - a) / max(a, b))
    return float(np.mean(scores))


def test_separated_clusters_at_the_class_means():
    points, _, means = clusters()
    assert silhouette(points, K, seed=0) > 0.95
    assert shift_distance(points, means, K, seed=0) < 0.05


def test_shift_distance_equals_the_norm_of_a_known_offset():
    offset = np.array([3.0, -4.0] + [0.0] * (D - 2))  # norm 5
    points, _, means = clusters(offset=offset, spread=0.01)
    assert shift_distance(points, means, K, seed=0) == pytest.approx(5.0, abs=0.01)
    # the silhouette does not care where the clusters sit
    assert silhouette(points, K, seed=0) == pytest.approx(silhouette(points - offset, K, seed=0))


def test_shift_distance_does_not_depend_on_the_order_of_the_reference_means():
    points, _, means = clusters(offset=np.full(D, 0.5))
    permuted = means[[2, 0, 3, 1]]
    a = shift_distance(points, means, K, seed=0)
    assert shift_distance(points, permuted, K, seed=0) == pytest.approx(a)
    assert a == pytest.approx(0.5 * math.sqrt(D), abs=0.02)


def test_hungarian_matching_beats_greedy_and_equals_brute_force():
    # greedy (closest pair first) takes c0-r0 (1), leaving c1-r1 (6): mean 3.5;
    # the optimal matching is c0-r1 (2) + c1-r0 (3): mean 2.5
    centroids = np.array([[0.0], [4.0]])
    references = np.array([[1.0], [-2.0]])
    assert matched_distance(centroids, references) == pytest.approx(2.5)
    rng = np.random.default_rng(3)
    for _ in range(5):
        c, r = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
        brute = min(
            np.mean([np.linalg.norm(c[i] - r[p[i]]) for i in range(5)])
            for p in itertools.permutations(range(5))
        )
        assert matched_distance(c, r) == pytest.approx(brute)
        assert matched_distance(c, r[::-1]) == pytest.approx(brute)


def test_matched_distance_skips_reference_classes_that_have_no_data():
    centroids = np.array([[0.0, 0.0], [10.0, 0.0]])
    references = np.array([[0.0, 1.0], [np.nan, np.nan], [10.0, 3.0]])
    assert matched_distance(centroids, references) == pytest.approx(2.0)


def test_silhouette_matches_a_plain_implementation():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(size=(30, 3)), rng.normal(size=(30, 3)) + 2.5])
    _, assigned = kmeans(x, 3, seed=0)
    assert silhouette(x, 3, seed=0) == pytest.approx(plain_silhouette(x, assigned))


def test_silhouette_is_nan_for_identical_embeddings_and_seeded():
    with pytest.warns(Warning):  # sklearn: fewer distinct points than clusters
        assert math.isnan(silhouette(np.ones((20, 4)), 3, seed=0))
    x = np.random.default_rng(0).normal(size=(60, 5))
    assert silhouette(x, 4, seed=7) == silhouette(torch.tensor(x), 4, seed=7)


def test_class_means_by_hand():
    x = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    means = class_means(x, np.array([0, 0, 2]), k=3)
    np.testing.assert_allclose(means[0], [2.0, 3.0])
    assert np.isnan(means[1]).all()
    np.testing.assert_allclose(means[2], [5.0, 6.0])
    with pytest.raises(TTABenchError):
        class_means(x, np.array([0, 1, 3]), k=3)


def test_prototype_distance_by_hand():
    embeddings = np.array([[1.0, 0.0], [3.0, 0.0], [1.0, 1.0]])
    predictions = np.array([0, 0, 1])
    weight = np.array([[0.0, 5.0], [2.0, 2.0], [7.0, 7.0]])  # class 2 is never predicted
    # class 0: mean (2, 0) vs (0, 5): cosine 0 -> 1; class 1: mean (1, 1) vs (2, 2): cosine 1 -> 0
    assert prototype_distance(embeddings, predictions, weight) == pytest.approx(0.5)
    euclid = (math.sqrt(2**2 + 5**2) + math.sqrt(2)) / 2
    assert prototype_distance(embeddings, predictions, weight, "euclidean") == pytest.approx(euclid)
    with pytest.raises(TTABenchError):
        prototype_distance(embeddings, np.array([0, 0, 3]), weight)


def test_mean_entropy_of_uniform_and_certain_predictions():
    assert mean_entropy(torch.zeros(5, 7)) == pytest.approx(math.log(7))
    certain = torch.tensor([[100.0, 0.0, 0.0], [0.0, 0.0, 100.0]])
    assert mean_entropy(certain) == pytest.approx(0.0, abs=1e-12)


def test_phase_summary_by_hand():
    frame = pd.DataFrame(
        {
            "step": [0, 10, 20, 30],
            "accuracy": [0.5, 0.7, 0.6, 0.2],
            "silhouette": [0.1, 0.3, 0.4, 0.6],
            "shift_distance": [1.0, 1.1, 2.0, 4.0],
        }
    )
    summary = phase_summary(frame)
    assert summary["peak_step"] == 10 and summary["end_step"] == 30
    assert summary["d_accuracy_1"] == pytest.approx(0.2)
    assert summary["d_silhouette_1"] == pytest.approx(0.2)
    assert summary["d_accuracy_2"] == pytest.approx(-0.5)
    assert summary["d_shift_2"] == pytest.approx(2.9)


def test_sweep_correlations():
    sweep = pd.DataFrame(
        {
            "d_silhouette_1": [0.1, 0.2, 0.3, 0.4],
            "d_accuracy_1": [0.01, 0.05, 0.06, 0.2],
            "d_shift_2": [1.0, 2.0, 3.0, 4.0],
            "d_accuracy_2": [-0.1, -0.2, -0.25, -0.5],
        }
    )
    result = sweep_correlations(sweep)
    assert result["phase1"]["spearman"] == pytest.approx(1.0)
    assert result["phase2"]["spearman"] == pytest.approx(-1.0)
    expected = np.corrcoef(sweep["d_shift_2"], sweep["d_accuracy_2"])[0, 1]
    assert result["phase2"]["pearson"] == pytest.approx(expected)
    assert result["phase1"]["n"] == 4
    assert math.isnan(sweep_correlations(sweep.head(2))["phase1"]["spearman"])
