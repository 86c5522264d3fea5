"""Row-wise encoding of small requests gives exactly the processor's ids and the same scores."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serve_runs import FINALMLP, make_run

from finalmlp.bundle import Run, load_run
from finalmlp.features.tables import PAD_ID, IdTable
from finalmlp.serve.rowwise import WHITESPACE, RowScorer
from finalmlp.serve.scorer import RecordError, Scorer

EVERY_KIND: list[dict[str, Any]] = [
    {"name": "user", "type": "categorical", "min_count": 3},
    {"name": "item", "type": "categorical", "hash_buckets": 7},
    {"name": "price", "type": "numeric", "transform": "standard"},
    {"name": "price_log", "source": "price", "type": "numeric", "transform": "log"},
    {"name": "price_sq", "source": "price", "type": "numeric", "bucketize": "log_square"},
    {"name": "age", "type": "numeric", "bucketize": "quantile", "num_buckets": 4},
    {"name": "age_mm", "source": "age", "type": "numeric", "transform": "minmax"},
    {"name": "history", "type": "sequence", "max_len": 3, "truncate": "tail"},
    {"name": "tags", "type": "sequence", "separator": "|", "max_len": 3, "share_embedding": "item"},
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return load_run(make_run(tmp_path_factory.mktemp("rowwise"), FINALMLP, EVERY_KIND))


TEXT = [
    "u001",
    "u002",
    " u003 ",
    "u004\t",
    "003",
    "h1",
    "h2",
    "never",
    "",
    "  ",
    "True",
    "FALSE",
    "true",
    "\x1c",
    "\u3000u005",
    "é",
    "0",
    "-1",
    "1.5",
    "null",
]
NUMBERS = [0, 1, -1, 2, 2.5, 3, 7.25, 1e6, -1e6, 1e20, 0.1, "4.5", " 3 ", None]


def random_record(rng: random.Random) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for field in ("user", "item"):
        record[field] = rng.choice([*TEXT, None, 5, 3.0, 2.5, True])
    for field in ("price", "age"):
        record[field] = rng.choice(NUMBERS)
    separators = {"history": "^", "tags": "|"}
    for field, sep in separators.items():
        items = [rng.choice(TEXT) for _ in range(rng.randint(0, 6))]
        record[field] = rng.choice([sep.join(items), items, None, "", rng.choice(TEXT)])
    for field in list(record):
        if rng.random() < 0.1:
            del record[field]  # missing: the fill value
    return record


def test_row_path_scores_exactly_as_the_processor(run: Run) -> None:
    fast, reference = RowScorer(run), Scorer(run)
    assert fast.encoder is not None  # the probe check passed: the row path is used
    rng = random.Random(0)
    for size in (1, 2, 7, 64, 300):
        records = [random_record(rng) for _ in range(size)]
        np.testing.assert_array_equal(fast.score_records(records), reference.score_records(records))


def test_white_space_is_trimmed_as_polars_trims_it(run: Run) -> None:
    fast, reference = RowScorer(run), Scorer(run)
    spaces = sorted({*WHITESPACE, *(chr(c) for c in range(0x3001) if chr(c).isspace())})
    records = [{"user": f"{ch}u001{ch}", "history": f"h1{ch}^{ch}"} for ch in spaces]
    assert "\x1c" in spaces  # Python strips it, Polars does not
    np.testing.assert_array_equal(fast.score_records(records), reference.score_records(records))


def test_large_requests_use_the_processor(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = RowScorer(run, max_rows=2)
    assert fast.encoder is not None
    calls: list[int] = []
    original = fast.encoder.encode
    monkeypatch.setattr(
        fast.encoder, "encode", lambda cols, n: calls.append(n) or original(cols, n)
    )
    records = [random_record(random.Random(i)) for i in range(3)]
    np.testing.assert_array_equal(fast.score_records(records), Scorer(run).score_records(records))
    fast.score_records(records[:2])
    assert calls == [2]


def test_record_errors_are_the_scorers(run: Run) -> None:
    for bad, message in [
        ({"user": "u1", "colour": "red"}, r"record 1, field 'colour': unknown field"),
        ({"price": "cheap"}, r"record 1, field 'price': expected a number, got 'cheap'"),
        ({"user": {"id": 1}}, r"record 1, field 'user': expected a string or number"),
        (7, r"record 1, field '\*': expected an object"),
    ]:
        with pytest.raises(RecordError, match=message):
            RowScorer(run).score_records([{"user": "u001"}, bad])


def test_a_processor_the_row_path_does_not_match_falls_back(
    run: Run, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    original = IdTable.encode

    def unseen_as_padding(self: IdTable, tokens: Any) -> np.ndarray:
        ids = original(self, tokens)
        return np.where(ids == 1, PAD_ID, ids).astype(np.int32)

    monkeypatch.setattr(IdTable, "encode", unseen_as_padding)
    with caplog.at_level(logging.WARNING):
        fast = RowScorer(run)
    assert fast.encoder is None
    assert "differs from the processor" in caplog.text
    records = [{"user": "never-seen"}]
    np.testing.assert_array_equal(fast.score_records(records), Scorer(run).score_records(records))


def test_trained_runs_verify_too(tmp_path: Path) -> None:
    """Default features of serve_runs (quantile buckets, shared vocabulary tables)."""
    fast = RowScorer(load_run(make_run(tmp_path)))
    assert fast.encoder is not None
