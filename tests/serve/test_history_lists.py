"""A history sent as a JSON list keeps each item whole, even one holding the separator; the
row-wise fast path and the processor path agree on list records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from serve_runs import make_run

from finalmlp.bundle import load_run
from finalmlp.serve.rowwise import RowScorer
from finalmlp.serve.scorer import Scorer


def test_a_list_item_holding_the_separator_stays_one_item(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path))
    scorer = Scorer(run)
    base = {"user": "u001", "item": "003", "price": 1.0, "age": 30, "tags": ["001"]}
    # "h1^h2" is one (unknown: OOV) item, not the two known items h1 and h2
    whole = scorer.score_records([{**base, "history": ["h1^h2"]}])
    split = scorer.score_records([{**base, "history": "h1^h2"}])
    as_list = scorer.score_records([{**base, "history": ["h1", "h2"]}])
    oov = scorer.score_records([{**base, "history": ["never-seen"]}])
    np.testing.assert_allclose(split, as_list)
    np.testing.assert_allclose(whole, oov)
    assert not np.allclose(whole, split)
    frame = pl.DataFrame(
        {k: [v] for k, v in {**base, "history": ["h1^h2"], "tags": ["001"]}.items()}
    ).with_columns(pl.col("age").cast(pl.Float64))
    ids = run.processor.transform(frame).sequences[0]
    assert (ids[0] > 0).sum() == 1 and ids[0][0] == 1  # one item, OOV


def test_rowwise_path_takes_lists_like_the_processor(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path))
    records = [
        {"user": "u001", "item": "003", "price": 1.0, "age": 30, "tags": ["001", "0|02"],
         "history": [" h3", "h1^h2", "True", ""]},
        {"user": "u002", "item": "004", "price": None, "age": 50, "tags": "001|002",
         "history": []},
    ]  # fmt: skip
    fast = RowScorer(run)
    assert fast.encoder is not None
    np.testing.assert_allclose(fast.score_records(records), Scorer(run).score_records(records))
