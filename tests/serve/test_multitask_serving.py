"""Serving a run of several tasks: a probability per task and record, feedback per task, the A/B
report per task and arm, the log replayed; one-task replies stay as they were."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient
from serve_runs import make_run, rows

from finalmlp.serve.ab import ABLog, Arm, choose_arm
from finalmlp.serve.app import create_app, load_arms
from finalmlp.serve.batch import score_file
from finalmlp.serve.scorer import RecordError, Scorer
from finalmlp.serve.settings import ServeSettings

TASKS = ["click", "buy"]


@pytest.fixture(scope="module")
def two_task(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two runs of the tasks click and buy (other weights), and a one-task run."""
    folder = tmp_path_factory.mktemp("multitask_serving")
    return {
        "a": make_run(folder / "a", labels=TASKS),
        "b": make_run(folder / "b", labels=TASKS, seed=1),
        "one": make_run(folder / "one"),
    }


def records(count: int, seed: int = 3) -> list[dict[str, Any]]:
    """Raw records as a client sends them (a blank number is null)."""
    frame = rows(count, seed).drop("label")
    return [{k: (None if v == "" else v) for k, v in r.items()} for r in frame.to_dicts()]


def test_predict_gives_each_record_a_probability_per_task(
    two_task: dict[str, Path], tmp_path: Path
) -> None:
    client = TestClient(create_app(load_arms([Arm("default", two_task["a"])]), ServeSettings()))
    batch = records(50)
    body = client.post("/v1/predict", json={"records": batch}).json()
    assert body["tasks"] == TASKS
    assert len(body["predictions"]) == 50
    assert all(list(p) == TASKS for p in body["predictions"])
    served = np.array([[p[t] for t in TASKS] for p in body["predictions"]])
    # the processor's column-wise path on the same rows in one call: bit for bit
    np.testing.assert_array_equal(served, Scorer.from_path(two_task["a"]).score_records(batch))
    assert np.abs(served[:, 0] - served[:, 1]).max() > 1e-3  # the tasks differ
    # batch prediction of the same rows from a file: one score column per task
    source = tmp_path / "rows.csv"
    rows(50, 3).drop("label").write_csv(source)
    score_file(two_task["a"], source, tmp_path / "scores.csv", backend="torch")
    scores = pl.read_csv(tmp_path / "scores.csv")
    expected = np.stack([scores[f"score_{t}"].to_numpy() for t in TASKS], axis=1)
    np.testing.assert_allclose(served, expected, rtol=1e-6)
    model = client.get("/v1/model").json()["arms"][0]
    assert model["tasks"] == TASKS


def test_a_one_task_reply_is_unchanged(two_task: dict[str, Path]) -> None:
    client = TestClient(create_app(load_arms([Arm("default", two_task["one"])]), ServeSettings()))
    body = client.post("/v1/predict", json={"records": records(3)}).json()
    assert set(body) == {"predictions", "arm", "request_id", "model_version"}
    assert all(isinstance(p, float) for p in body["predictions"])


def _pairwise_auc(outcomes: list[int], scores: list[float]) -> float:
    pos = [s for s, o in zip(scores, outcomes, strict=True) if o]
    neg = [s for s, o in zip(scores, outcomes, strict=True) if not o]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def test_feedback_per_task_and_the_report_per_task_and_arm(
    two_task: dict[str, Path], tmp_path: Path
) -> None:
    arms = load_arms([Arm("control", two_task["a"]), Arm("new", two_task["b"])])
    plain = [a.arm for a in arms]
    key = {
        name: next(f"u{i}" for i in range(200) if choose_arm(plain, f"u{i}").name == name)
        for name in ("control", "new")
    }
    settings = ServeSettings(ab_log=tmp_path / "ab.jsonl")
    outcomes = {  # a task left out or null: not observed
        "control": [{"click": 1, "buy": 0}, {"click": 0}, {"click": 1, "buy": None}, {}],
        "new": [{"click": 0, "buy": 1}, {"click": 1, "buy": 0}, {"buy": 1}, {"click": 0}],
    }
    labelled: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
    with TestClient(create_app(arms, settings)) as client:
        for arm, batch in outcomes.items():
            scored = client.post(
                "/v1/predict", json={"records": records(4, seed=len(arm)), "key": key[arm]}
            ).json()
            assert scored["arm"] == arm
            response = client.post(
                "/v1/feedback", json={"request_id": scored["request_id"], "outcomes": batch}
            )
            assert response.status_code == 200, response.text
            assert response.json()["recorded"] == 4
            for task in TASKS:
                pairs = [
                    (o[task], p[task])
                    for o, p in zip(batch, scored["predictions"], strict=True)
                    if o.get(task) is not None
                ]
                labelled[arm, task] = ([o for o, _ in pairs], [p for _, p in pairs])
        report = client.get("/v1/ab").json()["arms"]
        metrics = client.get("/metrics").text
    for arm in ("control", "new"):
        assert (report[arm]["requests"], report[arm]["impressions"]) == (1, 4)
        assert "ctr" not in report[arm]  # a run of several tasks reports per task only
        assert list(report[arm]["tasks"]) == TASKS
        for task in TASKS:
            got = report[arm]["tasks"][task]
            outcome, predicted = labelled[arm, task]
            assert (got["feedback"], got["clicks"]) == (len(outcome), sum(outcome))
            assert got["ctr"] == pytest.approx(sum(outcome) / len(outcome))
            assert got["mean_predicted_ctr"] == pytest.approx(np.mean(predicted))
            expected_auc = (
                _pairwise_auc(outcome, predicted) if 0 < sum(outcome) < len(outcome) else None
            )
            assert got["auc"] == (pytest.approx(expected_auc) if expected_auc is not None else None)
    click = report["new"]["tasks"]["click"]["vs_control"]
    # control click: 2 of 3; new click: 1 of 3; pooled 1/2, var = 1/4 * 2/3
    assert click["control"] == "control"
    assert click["z"] == pytest.approx((1 / 3 - 2 / 3) / math.sqrt(0.25 * (2 / 3)))
    assert 'finalmlp_feedback_total{arm="control"} 4.0' in metrics  # observed (record, task)s
    # the log holds per-task predictions, and replays into the same report
    lines = [json.loads(line) for line in (tmp_path / "ab.jsonl").read_text().splitlines()]
    assert lines[0]["tasks"] == TASKS and list(lines[0]["predictions"][0]) == TASKS
    assert lines[1]["outcomes"][1] == {"click": 0, "buy": None}
    replayed = ABLog(tmp_path / "ab.jsonl").report(["control", "new"], {"control": TASKS})
    assert replayed["arms"] == report


def test_per_task_feedback_errors(two_task: dict[str, Path]) -> None:
    client = TestClient(create_app(load_arms([Arm("default", two_task["a"])]), ServeSettings()))
    scored = client.post("/v1/predict", json={"records": records(2)}).json()

    def feedback(outcomes: Any) -> Any:
        return client.post(
            "/v1/feedback", json={"request_id": scored["request_id"], "outcomes": outcomes}
        )

    cases = [
        ([1, 0], "was scored for the tasks ['click', 'buy']; send one object per record"),
        ([{"click": 1}, {"like": 1}], "outcomes.1: unknown task 'like'"),
        ([{"click": 1}], "scored 2 records but 1 outcomes came"),
    ]
    for outcomes, message in cases:
        response = feedback(outcomes)
        assert response.status_code == 422 and message in response.json()["detail"]["message"]
    response = feedback([{"click": 2}, {}])
    assert response.status_code == 422
    assert response.json()["detail"]["message"].startswith("outcomes.0")
    assert feedback([{"click": 1}, {"buy": 0}]).status_code == 200
    one = TestClient(create_app(load_arms([Arm("default", two_task["one"])]), ServeSettings()))
    scored = one.post("/v1/predict", json={"records": records(2)[:1]}).json()
    response = one.post(
        "/v1/feedback", json={"request_id": scored["request_id"], "outcomes": [{"click": 1}]}
    )
    assert response.status_code == 422
    assert response.json()["detail"]["message"].startswith("outcomes must be 0 or 1")


def test_a_non_finite_score_of_any_task_is_a_record_error(two_task: dict[str, Path]) -> None:
    scorer = Scorer.from_path(two_task["a"])
    batch = records(3)
    batch[2]["price"] = 5e30
    prepared = scorer.prepare(batch)
    scores = scorer.score_prepared(prepared)
    scores[2, 1] = np.nan  # the second task only
    with pytest.raises(RecordError) as caught:
        scorer.check_finite(prepared, scores)
    assert (caught.value.index, caught.value.field) == (2, "price")


def test_a_one_task_log_and_a_multi_task_log_replay_together(tmp_path: Path) -> None:
    path = tmp_path / "ab.jsonl"
    log = ABLog(path)
    log.log_impressions("r1", "a", [0.2, 0.7])  # a one-task model
    log.log_feedback("r1", [0, 1])
    log.log_impressions("r2", "a", [[0.1, 0.9], [0.6, 0.3]], TASKS)  # after a reload: 2 tasks
    log.log_feedback("r2", [{"click": 1, "buy": 0}, {"click": 0}])
    log.close()
    report = ABLog(path).report()["arms"]["a"]
    assert (report["feedback"], report["clicks"], report["auc"]) == (2, 1, 1.0)
    assert report["tasks"]["click"]["feedback"] == 2 and report["tasks"]["click"]["auc"] == 0.0
    assert report["tasks"]["buy"] == {
        "feedback": 1,
        "clicks": 0,
        "ctr": 0.0,
        "mean_predicted_ctr": pytest.approx(0.9),
        "auc": None,
    }
