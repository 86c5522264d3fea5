"""The service builds a record's history from the recent events sent with it, by the training
builder's rules: the same score as the history sent as lists, and as batch predict on the row
the builder made; a bad events list is a 422 naming the record and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient
from serve_runs import make_run

from finalmlp.bundle import Run, load_run
from finalmlp.config import parse_config
from finalmlp.data.frames import frame_histories, load_frames
from finalmlp.data.split import EncodedSplit
from finalmlp.inference import predict_proba
from finalmlp.serve.ab import Arm
from finalmlp.serve.app import create_app, load_arms
from finalmlp.serve.rowwise import RowScorer
from finalmlp.serve.scorer import RecordError, Scorer
from finalmlp.serve.settings import ServeSettings
from finalmlp.train.run import train_from_config

DATA = {"recipe": "synthetic", "synthetic": {"num_rows": 2000, "histories": True, "seed": 5}}
MODEL = {"name": "din", "embedding_dim": 8, "mlp": {"hidden_units": [16]}}
TRAIN = {"batch_size": 256, "max_epochs": 1, "progress": False, "seed": 3}
HISTORY = {"hist_item": "item", "hist_category": "category"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    folder = tmp_path_factory.mktemp("events")
    config = parse_config({"data": {**DATA, "cache_dir": str(folder / "cache")},
                           "model": MODEL, "train": TRAIN})  # fmt: skip
    train_from_config(config, folder / "run")
    return load_run(folder / "run")


@pytest.fixture(scope="module")
def log(run: Run) -> dict[str, Any]:
    """The raw splits, the test rows' built histories and their batch scores."""
    frames = load_frames(run.config.data)
    histories = frame_histories(frames, run.config.data)["test"]
    encoded = run.processor.transform(frames["test"], histories)
    scores = run.calibrate(predict_proba(run.model, EncodedSplit(encoded, None)))[:, 0]
    everything = pl.concat([frames[s] for s in ("train", "valid", "test")])
    return {"test": frames["test"], "histories": histories, "scores": scores, "all": everything}


def _records(log: dict[str, Any], rows: list[int]) -> tuple[list[dict[str, Any]], ...]:
    """For test ``rows``: the records with events (all the user's rows in every split, later
    ones and non-clicks included, shuffled), and the same records with the built histories as
    lists."""
    test, histories, everything = log["test"], log["histories"], log["all"]
    rng = np.random.default_rng(0)
    with_events, with_lists = [], []
    for row in rows:
        record = {k: test[k][row] for k in ("user", "item", "category")}
        own = everything.filter(pl.col("user") == record["user"]).to_dicts()
        events = [
            {"item": e["item"], "category": e["category"], "time": int(e["time"]),
             "label": int(e["label"]), **({"user": e["user"]} if i % 2 else {})}
            for i, e in enumerate(own)
        ]  # fmt: skip
        rng.shuffle(events)  # type: ignore[arg-type]
        with_events.append({**record, "time": int(test["time"][row]), "events": events})
        end, length = int(histories.ends[row]), int(histories.lengths[row])
        lists = {f: histories.events[c][end - length : end].to_list() for f, c in HISTORY.items()}
        with_lists.append({**record, **lists})
    return with_events, with_lists


def test_events_score_as_lists_and_as_the_built_row(run: Run, log: dict[str, Any]) -> None:
    lengths = log["histories"].lengths
    rows = [int(r) for r in np.argsort(-lengths)[:6]] + [int(np.argmin(lengths))]
    assert lengths[rows[0]] > 3 and lengths[rows[-1]] == 0  # long histories and an empty one
    with_events, with_lists = _records(log, rows)
    for scorer in (Scorer(run), RowScorer(run)):
        from_events = scorer.score_records(with_events)[:, 0]
        np.testing.assert_allclose(from_events, scorer.score_records(with_lists)[:, 0])
        np.testing.assert_allclose(from_events, log["scores"][rows], rtol=1e-5, atol=1e-7)
    # events at or after the record's time change nothing; without a time, all count
    late = [{**with_events[0], "events": with_events[0]["events"] + [
        {"item": "i1", "category": "k0", "time": with_events[0]["time"], "label": 1}]}]  # fmt: skip
    np.testing.assert_allclose(Scorer(run).score_records(late)[0, 0], log["scores"][rows[0]])
    untimed = Scorer(run).prepare([{k: v for k, v in with_events[0].items() if k != "time"}])
    clicked = [e for e in with_events[0]["events"] if e["label"] == 1]
    expected = [e["item"] for e in sorted(clicked, key=lambda e: e["time"])][-20:]
    assert untimed.columns["hist_item"][0] == expected


def test_events_through_http(run: Run, log: dict[str, Any]) -> None:
    with_events, with_lists = _records(log, [0, 1, 2])
    client = TestClient(create_app(load_arms([Arm("default", run.path)]), ServeSettings()))
    events = client.post("/v1/predict", json={"records": with_events})
    lists = client.post("/v1/predict", json={"records": with_lists})
    assert events.status_code == 200, events.text
    np.testing.assert_allclose(events.json()["predictions"], lists.json()["predictions"])
    np.testing.assert_allclose(events.json()["predictions"], log["scores"][:3], rtol=1e-5)
    bad = client.post("/v1/predict", json={"records": [{"user": "u1", "events": [{"item": "i1"}]}]})
    assert bad.status_code == 422
    assert (bad.json()["detail"]["record"], bad.json()["detail"]["field"]) == (0, "events[0].time")


EVENT = {"item": "i1", "category": "k0", "time": 5, "label": 1}
BAD_EVENTS = [
    ({"events": "i1^i2"}, "events", "expected a list of event objects"),
    ({"events": ["i1"]}, "events[0]", "expected an event object"),
    ({"events": [EVENT, {"item": "i2", "category": "k0"}]}, "events[1].time", "needs its time"),
    ({"events": [{**EVENT, "time": "soon"}]}, "events[0].time", "expected a number, got 'soon'"),
    ({"events": [{**EVENT, "time": True}]}, "events[0].time", "expected a number"),
    ({"events": [{**EVENT, "time": float("nan")}]}, "events[0].time", "expected a finite"),
    ({"events": [{**EVENT, "item": " "}]}, "events[0].item", "needs a value of every history"),
    ({"events": [{**EVENT, "item": ["i1"]}]}, "events[0].item", "expected a string or number"),
    ({"events": [{**EVENT, "label": "yes"}]}, "events[0].label", "expected a number"),
    ({"events": [{**EVENT, "rating": 4}]}, "events[0].rating", "unknown event field"),
    ({"events": [{**EVENT, "user": "u2"}]}, "events[0].user", "own user's events"),
    ({"events": [EVENT], "hist_item": ["i1"]}, "events", "send one of them"),
    ({"events": [EVENT], "time": "later"}, "time", "expected a number"),
]


@pytest.mark.parametrize(("change", "field", "message"), BAD_EVENTS)
def test_bad_events_name_the_record_and_field(
    run: Run, change: dict[str, Any], field: str, message: str
) -> None:
    good = {"user": "u1", "item": "i3", "category": "k0", "events": [EVENT]}
    with pytest.raises(RecordError, match=message) as caught:
        Scorer(run).score_records([good, {**good, **change}])
    assert (caught.value.index, caught.value.field) == (1, field)


def test_events_to_a_model_without_histories(tmp_path: Path) -> None:
    scorer = Scorer(load_run(make_run(tmp_path)))
    record = {"user": "u001", "item": "003", "events": [EVENT]}
    with pytest.raises(RecordError, match="builds no history from events") as caught:
        scorer.score_records([record])
    assert caught.value.field == "events"


def test_long_lists_and_many_events_keep_the_most_recent(run: Run) -> None:
    """A history longer than max_len (20) keeps its last 20 items, whether sent as lists or
    built from events (sent newest first here: they are sorted by time)."""
    items = [f"i{k * 3}" for k in range(30)]
    categories = [f"k{k % 12}" for k in range(30)]
    base = {"user": "u1", "item": "i3", "category": "k0"}
    events = [{"item": items[k], "category": categories[k], "time": k, "label": 1}
              for k in reversed(range(30))]  # fmt: skip
    for scorer in (Scorer(run), RowScorer(run)):
        long, tail, head, built = scorer.score_records([
            {**base, "hist_item": items, "hist_category": categories},
            {**base, "hist_item": items[-20:], "hist_category": categories[-20:]},
            {**base, "hist_item": items[:20], "hist_category": categories[:20]},
            {**base, "events": events},
        ])[:, 0]  # fmt: skip
        assert long == pytest.approx(tail) and built == pytest.approx(tail)
        assert head != pytest.approx(tail)
