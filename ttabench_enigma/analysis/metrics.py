"""Embedding-drift metrics of "The Entropy Enigma" (Press et al., ICML 2024), as pure functions.

Entropy minimization first clusters the test embeddings better (``silhouette`` rises) while the
clusters stay near the clean class means, then keeps tightening the clusters while they drift
away from those means (``shift_distance`` grows). ``prototype_distance`` is the paper's
training-data-free proxy for the drift: the classifier's weight vectors stand in for the class
means.

Every function takes embeddings as an (n, d) array (numpy or torch) and returns a float; k-means
is seeded, so equal inputs give equal outputs.
"""

from __future__ import annotations

from typing import Literal, Union

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from ttabench.api import TTABenchError

ArrayLike = Union[np.ndarray, torch.Tensor]

#: k-means restarts; fixed so that results do not depend on the library default.
KMEANS_N_INIT = 4
#: Largest number of points the silhouette is computed on (a seeded subsample beyond that).
SILHOUETTE_MAX_SAMPLES = 2000


def _matrix(x: ArrayLike, name: str) -> np.ndarray:
    """A float64 (n, d) numpy copy of a tensor or array; (n, ...) inputs are flattened."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2:
        raise TTABenchError(f"{name} must have shape (n, d), got {tuple(x.shape)}")
    return x.reshape(len(x), -1)


def _vector(x: ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 1:
        raise TTABenchError(f"{name} must be one-dimensional, got shape {tuple(x.shape)}")
    return x.astype(np.int64)


def kmeans(embeddings: ArrayLike, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded k-means (``KMEANS_N_INIT`` restarts): returns (centroids (k, d), labels (n,))."""
    x = _matrix(embeddings, "embeddings")
    if k < 1 or len(x) < k:
        raise TTABenchError(f"k-means needs 1 <= k <= number of embeddings, got k={k}, n={len(x)}")
    model = KMeans(n_clusters=k, n_init=KMEANS_N_INIT, random_state=seed).fit(x)
    return model.cluster_centers_, model.labels_


def class_means(embeddings: ArrayLike, labels: ArrayLike, k: int) -> np.ndarray:
    """Per-class mean embedding: row c is mu_c = mean{ z_i : y_i = c }, shape (k, d).

    A class without any sample gets a row of NaN (``shift_distance`` ignores such rows).
    """
    x = _matrix(embeddings, "embeddings")
    y = _vector(labels, "labels")
    if len(y) != len(x):
        raise TTABenchError(f"got {len(x)} embeddings but {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() >= k):
        raise TTABenchError(f"labels must lie in [0, {k}), got range [{y.min()}, {y.max()}]")
    means = np.full((k, x.shape[1]), np.nan)
    for c in range(k):
        members = x[y == c]
        if len(members):
            means[c] = members.mean(axis=0)
    return means


def silhouette(embeddings: ArrayLike, k: int, seed: int) -> float:
    """Silhouette score of a seeded k-means clustering with ``k`` clusters (k = num. classes).

    For point i with cluster A: a_i = mean distance to the other points of A, b_i = the smallest
    mean distance to the points of another cluster; s_i = (b_i - a_i) / max(a_i, b_i), and the
    score is mean_i s_i in [-1, 1] (Euclidean distances). Beyond ``SILHOUETTE_MAX_SAMPLES``
    points, s is averaged over a subsample drawn with ``seed``. NaN when k-means finds fewer
    than two distinct clusters (e.g. every embedding equal).
    """
    x = _matrix(embeddings, "embeddings")
    _, assigned = kmeans(x, k, seed)
    if len(np.unique(assigned)) < 2 or len(np.unique(assigned)) >= len(x):
        return float("nan")
    sample_size = SILHOUETTE_MAX_SAMPLES if len(x) > SILHOUETTE_MAX_SAMPLES else None
    return float(silhouette_score(x, assigned, sample_size=sample_size, random_state=seed))


def matched_distance(centroids: ArrayLike, reference_means: ArrayLike) -> float:
    """Mean Euclidean distance between centroids and reference means under the best matching.

    With D[i, j] = ||c_i - r_j||_2, the Hungarian method (``linear_sum_assignment``) finds the
    one-to-one matching pi minimising sum_i D[i, pi(i)]; the result is that sum divided by the
    number of matched pairs, min(#centroids, #references). Reference rows holding NaN (classes
    absent from the reference data) are left out.
    """
    c = _matrix(centroids, "centroids")
    r = _matrix(reference_means, "reference_means")
    if c.shape[1] != r.shape[1]:
        raise TTABenchError(
            f"centroids have dimension {c.shape[1]} but reference means {r.shape[1]}"
        )
    r = r[~np.isnan(r).any(axis=1)]
    if len(c) == 0 or len(r) == 0:
        raise TTABenchError("shift distance needs at least one centroid and one reference mean")
    distances = cdist(c, r)
    rows, cols = linear_sum_assignment(distances)
    return float(distances[rows, cols].mean())


def shift_distance(
    embeddings: ArrayLike, reference_means: ArrayLike, k: int, seed: int
) -> float:
    """Distance of the test clusters from the clean class means ("shift distance").

    Seeded k-means with ``k`` clusters on the test embeddings gives centroids c_1..c_k; they are
    matched one-to-one to the reference class means r_1..r_k (clean data, source model) by the
    Hungarian method on the Euclidean distance matrix, and the result is
    (1 / k) * sum_i ||c_i - r_pi(i)||_2 (see ``matched_distance``).
    """
    centroids, _ = kmeans(embeddings, k, seed)
    return matched_distance(centroids, reference_means)


def prototype_distance(
    embeddings: ArrayLike,
    predictions: ArrayLike,
    classifier_weight: ArrayLike,
    metric: Literal["cosine", "euclidean"] = "cosine",
) -> float:
    """Training-data-free drift proxy: predicted-class means against the classifier's weights.

    For every class c predicted at least once, mu_c = mean{ z_i : yhat_i = c } and w_c is row c
    of the classifier's weight matrix (num_classes, d). The result is the mean over those
    classes C of d(mu_c, w_c):

    - ``"cosine"`` (default): d = 1 - <mu_c, w_c> / (||mu_c|| ||w_c||), in [0, 2]. The weight
      vectors live on another scale than the features (their norms depend on training, not on
      the data), so only directions are compared; a zero vector counts as distance 1.
    - ``"euclidean"``: d = ||mu_c - w_c||_2, scale-dependent; meaningful only when the weight
      and feature norms are comparable.
    """
    x = _matrix(embeddings, "embeddings")
    y = _vector(predictions, "predictions")
    w = _matrix(classifier_weight, "classifier_weight")
    if len(y) != len(x):
        raise TTABenchError(f"got {len(x)} embeddings but {len(y)} predictions")
    if w.shape[1] != x.shape[1]:
        raise TTABenchError(
            f"classifier weight has input dimension {w.shape[1]}, embeddings {x.shape[1]}"
        )
    if len(y) == 0:
        raise TTABenchError("prototype distance needs at least one embedding")
    if y.min() < 0 or y.max() >= len(w):
        raise TTABenchError(f"predictions must lie in [0, {len(w)})")
    if metric not in ("cosine", "euclidean"):
        raise TTABenchError(f"unknown metric '{metric}'; use 'cosine' or 'euclidean'")
    distances = []
    for c in np.unique(y):
        mean = x[y == c].mean(axis=0)
        if metric == "euclidean":
            distances.append(float(np.linalg.norm(mean - w[c])))
            continue
        norms = np.linalg.norm(mean) * np.linalg.norm(w[c])
        cosine = float(mean @ w[c] / norms) if norms > 0 else 0.0
        distances.append(1.0 - cosine)
    return float(np.mean(distances))


def mean_entropy(logits: ArrayLike) -> float:
    """Mean Shannon entropy (nats) of the softmax: (1/n) sum_i -sum_c p_ic log p_ic."""
    z = torch.as_tensor(logits).detach().double()
    log_p = torch.log_softmax(z, dim=1)
    return float(-(log_p.exp() * log_p).sum(dim=1).mean())


__all__ = [
    "KMEANS_N_INIT",
    "SILHOUETTE_MAX_SAMPLES",
    "class_means",
    "kmeans",
    "matched_distance",
    "mean_entropy",
    "prototype_distance",
    "shift_distance",
    "silhouette",
]
