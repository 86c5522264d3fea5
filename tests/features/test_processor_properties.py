"""Property tests (hypothesis) of the FeatureProcessor on arbitrary tables.

Tables hold text (any Unicode, blanks, separators), integers, floats (NaN, +-inf, huge), and
nulls. For every generated table and feature set:

* fit -> save -> load -> transform gives identical arrays, and fitting twice gives the same
  state (deterministic);
* every id of every field indexes its table, on the train table and on a second table full of
  unseen values; an unseen categorical value gets exactly the OOV id, a seen one its vocabulary
  id;
* sequences are item ids followed by padding only;
* numeric outputs are finite.

Bounded and derandomized, so CI runs the same examples each time (about 10 s).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finalmlp.features.processor import EncodedFeatures, FeatureProcessor, normalize_tokens
from finalmlp.features.tables import FIRST_ID, OOV_ID, PAD_ID
from finalmlp.schema import CategoricalFeature, Feature, NumericFeature, SequenceFeature

SETTINGS = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Small alphabets make repeats (vocabulary hits) likely; the odd characters test normalization.
_TEXT = st.text(alphabet="ab ^|,\t\u00e9\u4e2d1", max_size=6) | st.sampled_from(["True", " 7 "])
_FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, 1.5, -2.0, 1e6])
_MODERATE = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


def _column(kind: str, rows: int) -> st.SearchStrategy[pl.Series]:
    """A column of ``rows`` values of one kind, with nulls."""
    if kind == "text":
        values = st.lists(st.none() | _TEXT, min_size=rows, max_size=rows)
        return values.map(lambda v: pl.Series(v, dtype=pl.String))
    if kind == "int":
        ints = st.none() | st.integers(-(2**63), 2**63 - 1) | st.integers(-3, 3)
        values = st.lists(ints, min_size=rows, max_size=rows)
        return values.map(lambda v: pl.Series(v, dtype=pl.Int64))
    if kind == "float":
        values = st.lists(st.none() | _FLOATS, min_size=rows, max_size=rows)
        return values.map(lambda v: pl.Series(v, dtype=pl.Float64))
    if kind == "moderate":  # numbers in the range real features have, as numbers or text
        values = st.lists(st.none() | _MODERATE, min_size=rows, max_size=rows)
        as_text = st.booleans()
        return st.tuples(values, as_text).map(
            lambda p: (
                pl.Series([None if x is None else repr(x) for x in p[0]], dtype=pl.String)
                if p[1]
                else pl.Series(p[0], dtype=pl.Float64)
            )
        )
    raise AssertionError(kind)


@st.composite
def _tables(draw: st.DrawFn) -> tuple[list[Feature], pl.DataFrame, pl.DataFrame]:
    """Features over columns c0.. plus a train table and a second table (unseen values)."""
    kinds = {
        "cat": draw(st.sampled_from(["text", "int", "float"])),
        "hashed": draw(st.sampled_from(["text", "int"])),
        "seq": "text",
        "num": "moderate",
        "quantile": draw(st.sampled_from(["moderate", "float"])),
        "logsq": draw(st.sampled_from(["moderate", "float"])),
    }
    features: list[Feature] = [
        CategoricalFeature(name="cat", min_count=draw(st.integers(1, 3))),
        CategoricalFeature(name="hashed", hash_buckets=draw(st.integers(1, 8))),
        SequenceFeature(
            name="seq",
            separator=draw(st.sampled_from(["^", "|", ","])),
            max_len=draw(st.integers(1, 4)),
            truncate=draw(st.sampled_from(["head", "tail"])),
            min_count=draw(st.integers(1, 2)),
        ),
        NumericFeature(
            name="num",
            transform=draw(st.sampled_from(["none", "standard", "minmax", "log"])),
            fill_value=draw(st.sampled_from([0.0, -1.0])),
        ),
        NumericFeature(name="quantile", bucketize="quantile", num_buckets=draw(st.integers(2, 5))),
        NumericFeature(name="logsq", bucketize="log_square", min_count=draw(st.integers(1, 2))),
    ]
    frames = []
    for _ in range(2):
        rows = draw(st.integers(1, 25))
        frames.append(pl.DataFrame({name: draw(_column(k, rows)) for name, k in kinds.items()}))
    return features, frames[0], frames[1]


def _assert_same(a: EncodedFeatures, b: EncodedFeatures) -> None:
    np.testing.assert_array_equal(a.categorical, b.categorical, strict=True)
    np.testing.assert_array_equal(a.numeric, b.numeric, strict=True)
    assert len(a.sequences) == len(b.sequences)
    for x, y in zip(a.sequences, b.sequences, strict=True):
        np.testing.assert_array_equal(x, y, strict=True)


def _assert_valid(proc: FeatureProcessor, encoded: EncodedFeatures, rows: int) -> None:
    layout = proc.layout
    assert encoded.categorical.shape == (rows, len(layout.categorical_fields))
    assert encoded.categorical.dtype == np.int32
    for j, table in enumerate(layout.categorical_tables):
        column = encoded.categorical[:, j]
        # 0 is padding: a categorical field always holds a value (OOV at worst).
        assert ((column >= OOV_ID) & (column < layout.table_sizes[table])).all()
    for seq, table in zip(encoded.sequences, layout.sequence_tables, strict=True):
        assert seq.dtype == np.int32
        assert ((seq >= PAD_ID) & (seq < layout.table_sizes[table])).all()
        padded = seq == PAD_ID
        assert (padded[:, :-1] <= padded[:, 1:]).all(), "padding only after the items"
    assert encoded.numeric.dtype == np.float32
    assert np.isfinite(encoded.numeric).all()


def _save_and_load(proc: FeatureProcessor) -> FeatureProcessor:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "processor.json"
        proc.save(path)
        return FeatureProcessor.load(path)


@SETTINGS
@given(_tables())
def test_fit_save_load_transform_round_trips(
    case: tuple[list[Feature], pl.DataFrame, pl.DataFrame],
) -> None:
    features, train, other = case
    proc = FeatureProcessor(features).fit(train)
    loaded = _save_and_load(proc)
    assert loaded.to_dict() == proc.to_dict()
    assert FeatureProcessor(features).fit(train).to_dict() == proc.to_dict()
    for frame in (train, other):
        encoded = proc.transform(frame)
        _assert_same(loaded.transform(frame), encoded)
        _assert_same(proc.transform(frame), encoded)
        _assert_valid(proc, encoded, frame.height)


@SETTINGS
@given(_tables())
def test_unseen_values_get_the_oov_id_and_seen_ones_their_id(
    case: tuple[list[Feature], pl.DataFrame, pl.DataFrame],
) -> None:
    features, train, other = case
    proc = FeatureProcessor(features).fit(train)
    feature = features[0]
    assert isinstance(feature, CategoricalFeature)
    vocabulary = proc.tables_["cat"].values
    tokens = normalize_tokens(other["cat"], "cat").fill_null(feature.fill_value).to_list()
    expected = [
        FIRST_ID + vocabulary.index(t) if t in vocabulary else OOV_ID for t in tokens
    ]  # fmt: skip
    assert proc.transform(other).categorical[:, 0].tolist() == expected
    counts = normalize_tokens(train["cat"], "cat").fill_null(feature.fill_value).value_counts()
    kept = counts.filter(pl.col("count") >= feature.min_count)["cat"].to_list()
    assert sorted(vocabulary) == sorted(kept)


@SETTINGS
@given(_tables(), st.lists(st.none() | _FLOATS, min_size=1, max_size=20))
def test_any_number_encodes_in_range(
    case: tuple[list[Feature], pl.DataFrame, pl.DataFrame], numbers: list[float | None]
) -> None:
    # NaN, +-inf, 1e308, -0.0 and nulls in every numeric feature: valid buckets, finite values
    # (the plain numeric feature reads values a real feature has: +-1e6, as in the train table).
    features, train, _ = case
    proc = FeatureProcessor(features).fit(train)
    column = pl.Series(numbers, dtype=pl.Float64)
    moderate = column.clip(-1e6, 1e6)
    scored: dict[str, Any] = {
        "cat": column,
        "hashed": column.cast(pl.String),
        "seq": column.cast(pl.String),
        "num": moderate,
        "quantile": column,
        "logsq": column,
    }
    frame = pl.DataFrame(scored)
    _assert_valid(proc, proc.transform(frame), frame.height)


def test_numbers_beyond_float32_stay_finite() -> None:
    for transform in ("none", "standard", "minmax"):
        feature = NumericFeature(name="x", transform=transform)
        proc = FeatureProcessor([feature]).fit(pl.DataFrame({"x": [0.0, 1.0, 2.0]}))
        encoded = proc.transform(pl.DataFrame({"x": [1e39, -1e308]}))
        assert np.isfinite(encoded.numeric).all(), transform
