"""A/B logic: arm specs, sticky weighted assignment, the outcome log and its report."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest

from finalmlp.errors import ConfigError, DataError
from finalmlp.serve.ab import (
    ABLog,
    Arm,
    FeedbackError,
    UnknownRequestError,
    choose_arm,
    key_position,
    normalize_arms,
    parse_arm,
    two_proportion_test,
)


# ----------------------------------------------------------------------------- arm specs
def test_parse_arm_reads_name_dir_and_weight() -> None:
    assert parse_arm("control=runs/lr:0.9") == Arm("control", Path("runs/lr"), 0.9)
    assert parse_arm("new=runs/final") == Arm("new", Path("runs/final"), 1.0)
    assert parse_arm("b=/abs/dir:3") == Arm("b", Path("/abs/dir"), 3.0)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("runs/lr:0.9", "must look like NAME=DIR:WEIGHT"),
        ("=runs/lr:0.9", "must look like NAME=DIR:WEIGHT"),
        ("control=", "must look like NAME=DIR:WEIGHT"),
        ("control=runs/lr:heavy", "weight must be a number, got 'heavy'"),
        ("control=runs/lr:0", "weight must be a positive number, got 0.0"),
        ("control=runs/lr:-1", "weight must be a positive number, got -1.0"),
        ("control=runs/lr:nan", "weight must be a positive number"),
    ],
)
def test_parse_arm_rejects_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_arm(spec)


def test_normalize_arms_sums_to_one_and_rejects_repeated_names() -> None:
    arms = normalize_arms([Arm("a", Path("x"), 3), Arm("b", Path("y"), 1)])
    assert [a.weight for a in arms] == [0.75, 0.25]
    with pytest.raises(ConfigError, match=r"unique, got \['a'\]"):
        normalize_arms([Arm("a", Path("x")), Arm("a", Path("y"))])
    with pytest.raises(ConfigError, match="at least one arm"):
        normalize_arms([])


# ----------------------------------------------------------------------------- assignment
@pytest.mark.parametrize("weights", [[0.9, 0.1], [0.5, 0.3, 0.2], [1, 1]])
def test_split_follows_weights_within_2_percent_over_10k_keys(weights: list[float]) -> None:
    arms = normalize_arms([Arm(f"arm{i}", Path("x"), w) for i, w in enumerate(weights)])
    counts = Counter(choose_arm(arms, f"user-{i}").name for i in range(10_000))
    for arm in arms:
        assert abs(counts[arm.name] / 10_000 - arm.weight) < 0.02


def test_assignment_is_sticky_and_stable_across_processes() -> None:
    arms = normalize_arms([Arm("control", Path("x"), 0.5), Arm("new", Path("y"), 0.5)])
    for key in ("user-1", "42", "ünïcode", ""):
        assert len({choose_arm(arms, key).name for _ in range(20)}) == 1
    # blake2b, not hash(): these values do not depend on PYTHONHASHSEED or the process
    assert key_position("user-1") == pytest.approx(0.5346971828315457, abs=1e-15)
    assert choose_arm(arms, "user-1").name == "new"
    assert key_position("") == pytest.approx(0.7058483037031943, abs=1e-15)


def test_requests_without_a_key_are_random_and_seedable() -> None:
    arms = normalize_arms([Arm("a", Path("x"), 0.8), Arm("b", Path("y"), 0.2)])
    first = [choose_arm(arms, None, random.Random(7)).name for _ in range(5)]
    again = [choose_arm(arms, None, random.Random(7)).name for _ in range(5)]
    assert first == again
    rng = random.Random(3)
    counts = Counter(choose_arm(arms, None, rng).name for _ in range(10_000))
    assert abs(counts["a"] / 10_000 - 0.8) < 0.02


# ----------------------------------------------------------------------------- report
def _hand_case(log: ABLog) -> None:
    log.log_impressions("r1", "control", [0.2, 0.4, 0.6])
    log.log_impressions("r2", "control", [0.1])
    log.log_impressions("r3", "control", [0.5])  # no feedback: an impression only
    log.log_impressions("r4", "new", [0.3, 0.7])
    log.log_impressions("r5", "new", [0.2, 0.9])
    log.log_feedback("r1", [0, 1, 1])
    log.log_feedback("r2", [0])
    log.log_feedback("r4", [1, 0])
    log.log_feedback("r5", [1, 1])


def _check_hand_case(report: dict) -> None:
    control, new = report["arms"]["control"], report["arms"]["new"]
    # control: 5 impressions, 4 with feedback (0.2:0, 0.4:1, 0.6:1, 0.1:0), 2 clicks
    assert (control["requests"], control["impressions"], control["feedback"]) == (3, 5, 4)
    assert control["clicks"] == 2 and control["ctr"] == 0.5
    assert control["mean_predicted_ctr"] == pytest.approx((0.2 + 0.4 + 0.6 + 0.1) / 4)
    assert control["auc"] == 1.0  # both clicks (0.4, 0.6) score above both non-clicks
    assert "vs_control" not in control
    # new: 4 impressions, all with feedback (0.3:1, 0.7:0, 0.2:1, 0.9:1), 3 clicks
    assert (new["requests"], new["impressions"], new["feedback"], new["clicks"]) == (2, 4, 4, 3)
    assert new["ctr"] == 0.75
    assert new["mean_predicted_ctr"] == pytest.approx((0.3 + 0.7 + 0.2 + 0.9) / 4)
    assert new["auc"] == pytest.approx(1 / 3)  # of the 3 (click, non-click) pairs, 0.9 > 0.7
    # pooled p = 5/8; var = 5/8 * 3/8 * (1/4 + 1/4) = 15/128; z = (3/4 - 2/4) / sqrt(15/128)
    test = new["vs_control"]
    assert test["control"] == "control"
    assert test["z"] == pytest.approx(0.25 / math.sqrt(15 / 128))  # 0.7303
    assert test["p_value"] == pytest.approx(0.4652, abs=1e-4)  # 2 (1 - Phi(0.7303))


def test_report_matches_a_hand_computed_case() -> None:
    log = ABLog()
    _hand_case(log)
    _check_hand_case(log.report(["control", "new"]))


def test_report_has_nulls_where_undefined() -> None:
    log = ABLog()
    log.log_impressions("r1", "a", [0.3])
    log.log_impressions("r2", "b", [0.4, 0.5])
    log.log_feedback("r2", [1, 1])
    report = log.report(["a", "b", "c"])["arms"]
    assert report["a"] == {
        "requests": 1,
        "impressions": 1,
        "feedback": 0,
        "clicks": 0,
        "ctr": None,
        "mean_predicted_ctr": None,
        "auc": None,
    }
    assert report["b"]["auc"] is None  # a single class
    assert report["b"]["vs_control"] == {"control": "a", "z": None, "p_value": None}
    assert report["c"]["impressions"] == 0
    assert two_proportion_test(0, 10, 0, 10) == (None, None)  # pooled CTR 0: no variance


def test_feedback_errors_name_the_problem() -> None:
    log = ABLog(max_pending=3)
    log.log_impressions("r1", "a", [0.1, 0.2])
    with pytest.raises(UnknownRequestError, match="unknown request id 'nope'"):
        log.log_feedback("nope", [1])
    with pytest.raises(FeedbackError, match="scored 2 records but 3 outcomes came"):
        log.log_feedback("r1", [1, 0, 1])
    with pytest.raises(FeedbackError, match=r"outcomes must be 0 or 1, got \[1, 2\]"):
        log.log_feedback("r1", [1, 2])
    log.log_feedback("r1", [1, 0])
    with pytest.raises(UnknownRequestError, match="already recorded"):
        log.log_feedback("r1", [1, 0])
    for request in ("r2", "r3", "r4"):
        log.log_impressions(request, "a", [0.5] if request != "r3" else [0.5, 0.5])
    with pytest.raises(UnknownRequestError, match="older than the last 3 scored impressions"):
        log.log_feedback("r2", [1])  # expired: the newest 3 impressions (r3, r4) wait
    log.log_feedback("r3", [1, 0])


# ----------------------------------------------------------------------------- persistence
def test_log_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "ab" / "log.jsonl"
    log = ABLog(path)
    _hand_case(log)
    log.log_impressions("r6", "new", [0.4])
    log.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 10 and json.loads(lines[0])["type"] == "impressions"
    again = ABLog(path)
    _check_hand_case_plus_pending(again)
    again.log_feedback("r6", [0])  # scored before the restart, answered after it
    assert again.report()["arms"]["new"]["feedback"] == 5
    again.close()
    assert ABLog(path).report()["arms"]["new"]["feedback"] == 5


def _check_hand_case_plus_pending(log: ABLog) -> None:
    report = log.report(["control", "new"])
    assert report["arms"]["new"]["impressions"] == 5  # r6 is counted, not yet answered
    report["arms"]["new"]["impressions"] = 4
    report["arms"]["new"]["requests"] = 2
    _check_hand_case(report)


def test_a_truncated_last_line_is_dropped_and_the_log_repaired(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "log.jsonl"
    log = ABLog(path)
    _hand_case(log)
    log.close()
    with path.open("a") as file:  # a crash in the middle of a write
        file.write('{"type":"impressions","request_id":"r9","arm":"new","predictions":[0.')
    again = ABLog(path)
    assert "truncated last line" in caplog.text
    _check_hand_case(again.report(["control", "new"]))
    again.log_impressions("r10", "new", [0.5])  # appended on a line of its own
    again.close()
    assert path.read_text().endswith("\n") and "r9" not in path.read_text()
    assert ABLog(path).report()["arms"]["new"]["impressions"] == 5


def test_a_damaged_line_before_the_last_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    log = ABLog(path)
    _hand_case(log)
    log.close()
    lines = path.read_text().splitlines()
    lines[2] = "not json"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"log.jsonl, line 3: not a valid A/B log record"):
        ABLog(path)
