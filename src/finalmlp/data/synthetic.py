"""The built-in dataset: deterministic, CTR-like click logs from a hidden teacher.

Each row is one impression::

    label  c0   c1   ...  c{F-1}   n0     ...  n{D-1}
    Int8   Utf8 Utf8      Utf8     Float64      Float64 (about 2% null)

``c0`` is the context field (say, a user segment, ~20 values); the other categorical fields have
cardinalities spread geometrically up to ``max_cardinality``. Ids are Zipf-distributed, so a few
values are frequent and most are rare, as in real logs.

The label comes from a hidden logistic teacher whose logit is a sum of parts, each scaled to a
fixed standard deviation (``COMPONENT_STDS``)::

    logit = intercept
          + sum_f  bias_f[c_f]                                   per-value biases
          + sum_(f,g) <u_f[c_f], v_g[c_g]>                       low-rank pairwise (rank 4)
          + sum_g  gamma[c0, g] * a_g[c_g] / g                   sign/strength set by c0
          + w . z + z_0 * z_1                                    numeric, linear and product

The intercept is chosen by bisection so the mean click rate is ``TARGET_CTR``. Interactions carry
more than half of the logit variance, so a model of feature interactions (FinalMLP) beats
logistic regression on one-hot features, and crossing ``c0`` with the other fields helps.

With ``conversion`` (a second task) a ``conversion`` column follows ``label``: on clicked rows
a 0/1 draw from a second teacher, ``CONVERSION_SHARE`` of whose logit variance is the click
teacher's logit and the rest per-value biases of its own (so the tasks share what they learn,
but not all of it), with a mean rate of ``TARGET_CVR`` among clicks; on other rows it is blank
(a conversion is only observed after a click), which multi-task training masks out.

Example:
    >>> frame = generate_synthetic(SyntheticOptions(num_rows=1_000))
    >>> frame.columns[:3]
    ['label', 'c0', 'c1']
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from finalmlp.schema import SyntheticOptions

CONTEXT_FIELD = "c0"
CONTEXT_CARDINALITY = 20
ZIPF_EXPONENT = 1.1  # p_k ∝ 1 / (k + 1)^a: the long tail of real click logs
TARGET_CTR = 0.2
NULL_FRACTION = 0.02
INTERACTION_RANK = 4
PAIR_SPAN = 2  # non-context fields f < g interact when g - f <= PAIR_SPAN
MIN_COUNT_CARDINALITY = 1_000  # fields at least this large get ``min_count: 2``
COMPONENT_STDS = {"bias": 0.8, "pairwise": 0.7, "context": 0.8, "numeric": 0.5}
TARGET_CVR = 0.15  # conversions per click
CONVERSION_SHARE = 0.6  # of the conversion logit's variance, from the click teacher

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]


# ----------------------------------------------------------------------------- layout
def categorical_names(options: SyntheticOptions) -> list[str]:
    """``["c0", ..., "c{F-1}"]``; ``c0`` is :data:`CONTEXT_FIELD`."""
    return [f"c{i}" for i in range(options.num_categorical)]


def numeric_names(options: SyntheticOptions) -> list[str]:
    """``["n0", ..., "n{D-1}"]``."""
    return [f"n{i}" for i in range(options.num_numeric)]


def field_cardinalities(options: SyntheticOptions) -> list[int]:
    """Cardinality of each categorical field, geometric from ~20 (``c0``) to the maximum.

    Returns:
        ``F`` ints, non-decreasing, the first ``min(20, max_cardinality)``, the last
        ``max_cardinality``.
    """
    low = min(CONTEXT_CARDINALITY, options.max_cardinality)
    steps = np.linspace(0.0, 1.0, options.num_categorical)
    cards = np.rint(low * (options.max_cardinality / low) ** steps).astype(np.int64)
    return [int(c) for c in cards]


def synthetic_features(options: SyntheticOptions) -> list[dict[str, Any]]:
    """Feature specs for a config (``data.features``) matching :func:`generate_synthetic`.

    High-cardinality fields get ``min_count: 2`` so their one-off values share the OOV id.
    """
    features: list[dict[str, Any]] = []
    for name, card in zip(categorical_names(options), field_cardinalities(options), strict=True):
        spec: dict[str, Any] = {"name": name, "type": "categorical"}
        if card >= MIN_COUNT_CARDINALITY:
            spec["min_count"] = 2
        features.append(spec)
    for name in numeric_names(options):
        features.append({"name": name, "type": "numeric", "transform": "standard"})
    return features


# ----------------------------------------------------------------------------- inputs
def zipf_probabilities(cardinality: int) -> FloatArray:
    """``p_k ∝ 1 / (k + 1)^ZIPF_EXPONENT`` for ``k < cardinality``. Returns ``(cardinality,)``."""
    weights = 1.0 / np.arange(1, cardinality + 1, dtype=np.float64) ** ZIPF_EXPONENT
    return weights / weights.sum()


def zipf_ids(rng: np.random.Generator, cardinality: int, num_rows: int) -> IntArray:
    """Draw ``num_rows`` Zipf ids in ``[0, cardinality)`` (see :func:`zipf_probabilities`).

    Returns:
        ``(N,)`` int64; id 0 is the most frequent.
    """
    cdf = np.cumsum(zipf_probabilities(cardinality))
    ids = np.searchsorted(cdf, rng.random(num_rows), side="right")
    return np.minimum(ids, cardinality - 1).astype(np.int64)


def sample_categorical(rng: np.random.Generator, cards: list[int], num_rows: int) -> IntArray:
    """Zipf ids for every categorical field. Returns ``(N, F)`` int64."""
    return np.stack([zipf_ids(rng, card, num_rows) for card in cards], axis=1)


def sample_numeric(
    rng: np.random.Generator, num_rows: int, num_numeric: int
) -> tuple[FloatArray, FloatArray]:
    """Standard-normal signals and their observed values, about 2% of them missing.

    Returns:
        ``z`` ``(N, D)``: the teacher's view, 0 where missing; ``values`` ``(N, D)``:
        ``loc + scale * z`` per column, NaN where missing.
    """
    z = rng.standard_normal((num_rows, num_numeric))
    missing = rng.random((num_rows, num_numeric)) < NULL_FRACTION
    loc = rng.uniform(0.0, 10.0, num_numeric)
    scale = rng.uniform(0.5, 5.0, num_numeric)
    z[missing] = 0.0
    values = np.where(missing, np.nan, loc + scale * z)
    return z, values


# ----------------------------------------------------------------------------- teacher
def _scaled(component: FloatArray, std: float) -> FloatArray:
    """``component`` rescaled to standard deviation ``std`` (zeros stay zeros)."""
    current = float(component.std())
    return component * (std / current) if current > 0 else component


def _bias_logit(rng: np.random.Generator, ids: IntArray, cards: list[int]) -> FloatArray:
    """Sum of one random bias per field value. Returns ``(N,)``."""
    total = np.zeros(ids.shape[0])
    for field, card in enumerate(cards):
        total += rng.standard_normal(card)[ids[:, field]]
    return total


def interacting_pairs(num_categorical: int) -> list[tuple[int, int]]:
    """Pairs of non-context fields ``(f, g)``, ``1 <= f < g <= f + PAIR_SPAN``."""
    return [
        (f, g)
        for f in range(1, num_categorical)
        for g in range(f + 1, min(f + PAIR_SPAN + 1, num_categorical))
    ]


def _pairwise_logit(rng: np.random.Generator, ids: IntArray, cards: list[int]) -> FloatArray:
    """Sum over pairs of ``<u_f[c_f], v_g[c_g]>`` with rank-4 factors. Returns ``(N,)``."""
    total = np.zeros(ids.shape[0])
    for f, g in interacting_pairs(len(cards)):
        u = rng.standard_normal((cards[f], INTERACTION_RANK))
        v = rng.standard_normal((cards[g], INTERACTION_RANK))
        total += np.einsum("nk,nk->n", u[ids[:, f]], v[ids[:, g]])
    return total


def _context_logit(rng: np.random.Generator, ids: IntArray, cards: list[int]) -> FloatArray:
    """``sum_g gamma[c0, g] * a_g[c_g] / g``: each field's effect flips sign with the context.

    ``gamma`` is centred under the Zipf frequencies of ``c0``, so averaged over contexts these
    effects vanish: a model without ``c0`` crosses cannot see them. Returns ``(N,)``.
    """
    gamma = rng.standard_normal((cards[0], len(cards) - 1))
    gamma -= zipf_probabilities(cards[0]) @ gamma
    gamma = gamma[ids[:, 0]]  # (N, F-1)
    total = np.zeros(ids.shape[0])
    for field in range(1, len(cards)):
        # Weighted 1/field: the context acts mostly on the smaller fields, where data can show it.
        effect = rng.standard_normal(cards[field]) / field
        total += gamma[:, field - 1] * effect[ids[:, field]]
    return total


def _numeric_logit(rng: np.random.Generator, z: FloatArray) -> FloatArray:
    """``w . z / |w| + z_0 * z_1`` (``z_0^2 - 1`` with one column). Returns ``(N,)``."""
    if z.shape[1] == 0:
        return np.zeros(z.shape[0])
    weights = rng.standard_normal(z.shape[1])
    linear = z @ weights / np.linalg.norm(weights)
    second = z[:, 1] if z.shape[1] > 1 else z[:, 0]
    product = z[:, 0] * second - (1.0 if z.shape[1] == 1 else 0.0)
    return linear + product


def teacher_logit(
    rng: np.random.Generator, ids: IntArray, cards: list[int], z: FloatArray
) -> FloatArray:
    """The teacher's logit before the intercept, each part scaled per ``COMPONENT_STDS``.

    Args:
        rng: draws the teacher's parameters.
        ids: ``(N, F)`` categorical ids, ``ids[:, f] < cards[f]``.
        cards: ``F`` field cardinalities (a value may never be drawn, so not ``ids.max()``).
        z: ``(N, D)`` numeric signals.

    Returns:
        ``(N,)`` float64.
    """
    parts = {
        "bias": _bias_logit(rng, ids, cards),
        "pairwise": _pairwise_logit(rng, ids, cards),
        "context": _context_logit(rng, ids, cards),
        "numeric": _numeric_logit(rng, z),
    }
    scaled = [_scaled(part, COMPONENT_STDS[name]) for name, part in parts.items()]
    return np.stack(scaled).sum(axis=0)


def fit_intercept(logit: FloatArray, target: float = TARGET_CTR) -> float:
    """The ``b`` with ``mean(sigmoid(b + logit)) == target``, by bisection (to ~4e-8)."""
    low, high = -20.0, 20.0
    for _ in range(30):
        mid = 0.5 * (low + high)
        if float(np.mean(_sigmoid(mid + logit))) < target:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def _sigmoid(x: FloatArray) -> FloatArray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


# ----------------------------------------------------------------------------- public
def generate_synthetic_with_truth(options: SyntheticOptions) -> tuple[pl.DataFrame, FloatArray]:
    """The click log and each row's true click probability.

    Returns:
        The frame of :func:`generate_synthetic` (``N`` rows) and ``(N,)`` float64
        probabilities the labels were drawn from.
    """
    rows_rng, teacher_rng, label_rng = np.random.default_rng(options.seed).spawn(3)
    cards = field_cardinalities(options)
    ids = sample_categorical(rows_rng, cards, options.num_rows)
    z, values = sample_numeric(rows_rng, options.num_rows, options.num_numeric)
    logit = teacher_logit(teacher_rng, ids, cards, z)
    probability = _sigmoid(fit_intercept(logit) + logit)
    labels = label_rng.random(options.num_rows) < probability
    frame = _to_frame(options, labels, ids, values)
    if options.conversion:
        rng = np.random.default_rng([options.seed, 1])
        converted = _conversions(rng, ids, cards, logit, labels)
        conversion = pl.Series("conversion", converted.astype(np.int8), dtype=pl.Int8)
        frame.insert_column(1, conversion.set(pl.Series(~labels), None))
    return frame, probability


def _conversions(
    rng: np.random.Generator,
    ids: IntArray,
    cards: list[int],
    click_logit: FloatArray,
    clicked: BoolArray,
) -> BoolArray:
    """0/1 conversion draws for every row (the caller blanks the rows without a click); the
    intercept puts the mean rate over the clicked rows at ``TARGET_CVR``."""
    shared = _scaled(click_logit, np.sqrt(CONVERSION_SHARE))
    own = _scaled(_bias_logit(rng, ids, cards), np.sqrt(1.0 - CONVERSION_SHARE))
    logit = shared + own
    probability = _sigmoid(fit_intercept(logit[clicked], TARGET_CVR) + logit)
    return rng.random(len(logit)) < probability


def generate_synthetic(options: SyntheticOptions) -> pl.DataFrame:
    """A deterministic CTR-like click log: ``label``, ``c0..c{F-1}``, ``n0..n{D-1}``.

    Example:
        >>> generate_synthetic(SyntheticOptions(num_rows=500, num_numeric=1)).columns
        ['label', 'c0', 'c1', 'c2', 'c3', 'c4', 'c5', 'c6', 'c7', 'n0']
    """
    return generate_synthetic_with_truth(options)[0]


def _to_frame(
    options: SyntheticOptions, labels: BoolArray, ids: IntArray, values: FloatArray
) -> pl.DataFrame:
    """Assemble the frame: Int8 labels, Utf8 ids, Float64 numerics with NaN turned to null."""
    columns: list[pl.Series] = [pl.Series("label", labels.astype(np.int8), dtype=pl.Int8)]
    for index, name in enumerate(categorical_names(options)):
        columns.append(pl.Series(name, ids[:, index]).cast(pl.Utf8))
    for index, name in enumerate(numeric_names(options)):
        columns.append(pl.Series(name, values[:, index], dtype=pl.Float64).fill_nan(None))
    return pl.DataFrame(columns)
