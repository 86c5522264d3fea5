"""Several tasks per row: config, reading with blank labels, the masked loss, per-task metrics
and calibration, training with a task-weighted monitor, and every downstream output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch
from torch.nn import functional
from typer.testing import CliRunner

from finalmlp.bundle import load_run
from finalmlp.calibration import Calibration, PlattCalibrator, fit_calibration
from finalmlp.cli.main import USER_ERROR_EXIT, app
from finalmlp.config import parse_config
from finalmlp.data.dataset import prepare_data
from finalmlp.data.readers import read_file
from finalmlp.data.synthetic import TARGET_CVR, generate_synthetic
from finalmlp.errors import ConfigError, DataError, SchemaError
from finalmlp.metrics import log_loss, metric_rows, roc_auc, task_metrics
from finalmlp.predict import evaluate_run
from finalmlp.schema import DataConfig, SyntheticOptions
from finalmlp.serve.batch import score_file
from finalmlp.serve.onnx import OnnxModel, export_onnx, sample_features, torch_probabilities
from finalmlp.train.loss import TaskLoss
from finalmlp.train.run import train_from_config

FEATURES = [{"name": n, "type": "categorical"} for n in ("user", "item")]
TINY = {
    "name": "finalmlp",
    "embedding_dim": 4,
    "mlp1": {"hidden_units": [16]},
    "mlp2": {"hidden_units": [8]},
    "fs_hidden_units": [8],
    "num_heads": 2,
}


def two_task_csv(path: Path, num_rows: int = 600, seed: int = 0) -> Path:
    """``click`` from user and item, ``buy`` only on clicked rows (blank elsewhere)."""
    rng = np.random.default_rng(seed)
    user, item = rng.integers(0, 20, num_rows), rng.integers(0, 15, num_rows)
    click = (rng.random(num_rows) < 0.15 + 0.6 * (user % 2)).astype(int)
    buy = (rng.random(num_rows) < 0.2 + 0.6 * (item % 3 == 0)).astype(int)
    frame = pl.DataFrame(
        {
            "click": click.astype(str),
            "buy": np.where(click == 1, buy.astype(str), ""),
            "user": [f"u{u}" for u in user],
            "item": [f"i{i}" for i in item],
        }
    )
    frame.write_csv(path)
    return path


def config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    data = {
        "train": str(two_task_csv(tmp_path / "train.csv")),
        "labels": ["click", "buy"],
        "features": FEATURES,
        "cache_dir": str(tmp_path / "cache"),
        "split": {"valid_fraction": 0.25, "test_fraction": 0.25, "seed": 1},
    }
    train = {"max_epochs": 2, "batch_size": 64, "progress": False, "learning_rate": 0.01}
    raw = {"data": data, "model": TINY, "train": train}
    for key, value in overrides.items():
        raw[key] = {**raw[key], **value}
    return raw


# ----------------------------------------------------------------------------- config
def test_labels_shorthand_and_spec_forms() -> None:
    data = DataConfig.model_validate(
        {
            "train": "x.csv",
            "labels": ["click", {"name": "like", "column": "rating", "label_map": {"5": 1}}],
            "features": FEATURES,
        }
    )
    assert [(t.name, t.column, t.allow_missing) for t in data.tasks] == [
        ("click", "click", True),
        ("like", "rating", True),
    ]
    one = DataConfig.model_validate({"train": "x.csv", "label": "clk", "features": FEATURES})
    assert [(t.name, t.allow_missing) for t in one.tasks] == [("clk", False)]


def test_two_tasks_reading_one_column_get_their_own_frame_columns() -> None:
    data = DataConfig.model_validate(
        {
            "train": "x.csv",
            "labels": [
                {"name": "like", "column": "rating", "label_map": {"4": 1, "5": 1, "1": 0}},
                {"name": "love", "column": "rating", "label_map": {"5": 1, "4": 0, "1": 0}},
            ],
            "features": FEATURES,
        }
    )
    assert [t.frame_column for t in data.tasks] == ["rating#like", "rating#love"]
    assert data.label_columns == ["rating"]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"label": "click", "labels": ["click", "buy"]}, "data.label and data.labels"),
        ({"labels": ["click", "click"]}, "must be unique"),
        ({"labels": ["a.b"]}, "holds a '.'"),
        ({"labels": []}, "data.labels is empty"),
        ({"labels": ["user"]}, "label column 'user' is also a feature"),
        ({"labels": ["a", "b"], "format": "libsvm"}, "carry one label"),
    ],
)
def test_bad_label_declarations_are_refused(data: dict[str, Any], match: str) -> None:
    raw = {"data": {"train": "x.csv", "features": FEATURES, **data}}
    with pytest.raises(ConfigError, match=match):
        parse_config(raw)


@pytest.mark.parametrize(
    ("train", "match"),
    [
        ({"monitor": {"sales.auc": 1}}, "names task 'sales', which is not a task"),
        ({"monitor": {"click.precision": 1}}, "metric must be one of"),
        ({"monitor": {"buy.logloss": 1}}, "logloss needs a negative weight"),
        ({"task_weights": {"sales": 2}}, "names task 'sales'"),
    ],
)
def test_bad_monitor_and_weights_name_the_problem(train: dict[str, Any], match: str) -> None:
    raw = {"data": {"train": "x.csv", "features": FEATURES, "labels": ["click", "buy"]}}
    with pytest.raises(ConfigError, match=match):
        parse_config({**raw, "train": train})


# ----------------------------------------------------------------------------- reading
def test_blank_labels_are_masked_not_dropped_nor_negative(tmp_path: Path) -> None:
    cfg = parse_config(config(tmp_path))
    frame = read_file(cfg.data.train, cfg.data)  # type: ignore[arg-type]
    raw = pl.read_csv(cfg.data.train, infer_schema=False)  # type: ignore[arg-type]
    assert frame.height == raw.height  # no row dropped
    blank = (raw["buy"].fill_null("") == "").to_numpy()
    assert frame["buy"].is_null().to_numpy().tolist() == blank.tolist()
    data = prepare_data(cfg.data)
    label = data.splits["valid"].label
    assert label is not None and label.shape[1] == 2
    assert np.isnan(label[:, 1]).any() and not np.isnan(label[:, 0]).any()
    counts = data.splits["train"].label_counts()
    assert counts is not None and counts.labelled[1] < counts.labelled[0]


def test_a_blank_single_task_label_is_still_a_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("click,user,item\n1,a,b\n,a,c\n")
    data = DataConfig.model_validate({"train": str(path), "label": "click", "features": FEATURES})
    with pytest.raises(DataError, match="label column 'click' is empty on line 3"):
        read_file(path, data)


def test_a_missing_label_column_names_task_file_and_fix(tmp_path: Path) -> None:
    raw = config(tmp_path, data={"labels": ["click", "purchase"]})
    cfg = parse_config(raw)
    with pytest.raises(SchemaError, match=r"label column 'purchase' of task 'purchase' not found"):
        read_file(cfg.data.train, cfg.data)  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_label_values_outside_the_map_follow_the_bad_rows_policy(
    tmp_path: Path, policy: str
) -> None:
    path = tmp_path / "d.csv"
    path.write_text("click,stars,user,item\n1,5,a,b\n0,7,a,c\n1,,b,c\n0,1,b,b\n")
    labels = [{"name": "click"}, {"name": "fan", "column": "stars", "label_map": {"5": 1, "1": 0}}]
    data = DataConfig.model_validate(
        {"train": str(path), "labels": labels, "features": FEATURES, "on_bad_rows": policy}
    )
    if policy == "error":
        message = r"label column 'stars' \(task 'fan'\) holds a value that the label_map of task"
        with pytest.raises(DataError, match=message + r" 'fan' does not map .*'7' on line 3"):
            read_file(path, data)
        return
    with pytest.warns(UserWarning, match="skipped 1 bad row"):
        frame = read_file(path, data)
    assert frame["stars"].to_list() == [1.0, None, 0.0]  # the blank stays, masked


def test_a_task_whose_validation_rows_are_one_class_is_refused(tmp_path: Path) -> None:
    train = two_task_csv(tmp_path / "train.csv")
    valid = tmp_path / "valid.csv"
    frame = pl.read_csv(train, infer_schema=False).head(100)
    frame.with_columns(pl.when(pl.col("buy") != "").then(pl.lit("0")).alias("buy")).write_csv(valid)
    raw = config(tmp_path, data={"valid": str(valid), "test": str(valid)})
    raw["data"].pop("split")
    with pytest.raises(DataError, match=r"valid.csv: label column 'buy' \(task 'buy'\) has only"):
        train_from_config(parse_config(raw))


def test_several_tasks_with_a_one_task_model_is_refused(tmp_path: Path) -> None:
    raw = config(tmp_path)
    raw["model"] = {"name": "deepfm", "embedding_dim": 4, "mlp": {"hidden_units": [8]}}
    with pytest.raises(ConfigError, match=r"model 'deepfm' predicts one task, but data\.labels"):
        train_from_config(parse_config(raw))


# ----------------------------------------------------------------------------- loss, metrics
def test_task_loss_is_the_weighted_mean_bce_over_each_tasks_labelled_rows() -> None:
    torch.manual_seed(0)
    logits = torch.randn(8, 2, requires_grad=True)
    label = torch.tensor([[1, 0], [0, float("nan")], [1, 1], [0, float("nan")]] * 2).float()
    loss_fn = TaskLoss([1.0, 3.0])
    sums, counts = loss_fn.sums(logits, label)
    loss = loss_fn.combine(sums, counts)
    known = ~torch.isnan(label[:, 1])
    expected = functional.binary_cross_entropy_with_logits(logits[:, 0], label[:, 0])
    expected = expected + 3.0 * functional.binary_cross_entropy_with_logits(
        logits[known, 1], label[known, 1]
    )
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert logits.grad is not None
    assert torch.all(logits.grad[~known, 1] == 0)  # a missing label trains nothing
    assert torch.all(logits.grad[:, 0] != 0)


def test_one_task_without_missing_labels_is_the_plain_mean_bce() -> None:
    logits, label = torch.randn(16, 1), torch.randint(0, 2, (16, 1)).float()
    loss_fn = TaskLoss([1.0])
    value = loss_fn.combine(*loss_fn.sums(logits, label))
    torch.testing.assert_close(value, functional.binary_cross_entropy_with_logits(logits, label))


def test_task_metrics_score_each_task_on_its_labelled_rows() -> None:
    labels = np.array([[1, 0], [0, np.nan], [1, 1], [0, 0], [1, np.nan]], dtype=float)
    probs = np.array([[0.9, 0.2], [0.1, 0.99], [0.8, 0.7], [0.3, 0.6], [0.7, 0.01]])
    metrics = task_metrics(labels, probs, ["click", "buy"])
    known = ~np.isnan(labels[:, 1])
    assert metrics["buy.auc"] == roc_auc(labels[known, 1], probs[known, 1])
    assert metrics["buy.logloss"] == pytest.approx(log_loss(labels[known, 1], probs[known, 1]))
    assert metrics["auc"] == pytest.approx((metrics["click.auc"] + metrics["buy.auc"]) / 2)
    assert [task for task, _ in metric_rows(metrics)] == ["click", "buy"]
    one = task_metrics(labels[:, :1], probs[:, :1], ["click"])
    assert set(one) == {"auc", "logloss"} and metric_rows(one)[0][0] is None


def test_calibration_is_fitted_per_task_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    probs = rng.random((400, 2))
    labels = (rng.random((400, 2)) < probs**2).astype(float)
    labels[::3, 1] = np.nan
    calibration, effect = fit_calibration("platt", {"valid": (labels, probs)}, ["a", "b"])
    assert set(effect["valid"]) == {"a", "b"}
    known = ~np.isnan(labels[:, 1])
    alone = PlattCalibrator().fit(probs[known, 1], labels[known, 1])
    np.testing.assert_allclose(calibration.transform(probs)[:, 1], alone.transform(probs[:, 1]))
    again = Calibration.from_dict(json.loads(json.dumps(calibration.to_dict())), ["a", "b"])
    np.testing.assert_array_equal(again.transform(probs), calibration.transform(probs))
    with pytest.raises(DataError, match="must map each task"):
        Calibration.from_dict(calibration.to_dict(), ["a", "c"])


# ----------------------------------------------------------------------------- synthetic
def test_synthetic_conversions_are_observed_after_clicks_only() -> None:
    frame = generate_synthetic(SyntheticOptions(num_rows=20_000, conversion=True))
    clicked = frame["label"] == 1
    assert frame["conversion"].is_null().to_list() == (~clicked).to_list()
    assert frame.filter(clicked)["conversion"].mean() == pytest.approx(TARGET_CVR, abs=0.02)
    plain = generate_synthetic(SyntheticOptions(num_rows=20_000))
    assert frame.drop("conversion").equals(plain)  # the one-task set is unchanged


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("two_tasks")
    raw = config(
        folder,
        train={"monitor": {"click.auc": 1, "buy.auc": 2}, "task_weights": {"buy": 2.0}},
    )
    raw["train"]["calibration"] = "isotonic"
    metrics = train_from_config(parse_config(raw), folder / "run")
    return folder, metrics


def test_training_reports_every_task_and_the_weighted_monitor(
    trained: tuple[Path, dict[str, Any]],
) -> None:
    _, metrics = trained
    for split in ("valid", "test"):
        assert {"click.auc", "buy.auc", "click.logloss", "buy.logloss", "auc"} <= set(
            metrics[split]
        )
    for record in metrics["history"]:
        values = record["metrics"]
        assert record["monitor"] == pytest.approx(values["click.auc"] + 2 * values["buy.auc"])
    assert set(metrics["calibration"]["valid"]) == {"click", "buy"}


def test_predict_writes_a_score_per_task_and_evaluate_a_row_per_task(
    trained: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    folder, _ = trained
    run_dir = folder / "run"
    score_file(run_dir, folder / "train.csv", tmp_path / "scores.csv", backend="torch")
    scores = pl.read_csv(tmp_path / "scores.csv")
    assert scores.columns == ["score_click", "score_buy"]
    assert scores.height == pl.read_csv(folder / "train.csv").height
    evaluated = evaluate_run(run_dir, folder / "train.csv")
    assert {"click.auc", "buy.auc"} <= set(evaluated)
    result = CliRunner().invoke(
        app, ["evaluate", str(run_dir), "--data", str(folder / "train.csv")]
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if "│" in line]
    assert [line.split("│")[1].strip() for line in lines] == ["click", "buy", "mean"]


def test_onnx_export_gives_one_probability_per_task(
    trained: tuple[Path, dict[str, Any]],
) -> None:
    folder, _ = trained
    export_onnx(folder / "run")
    run = load_run(folder / "run")
    features = sample_features(run, 50, seed=3)
    onnx_scores = OnnxModel.from_run(folder / "run").predict(features)
    assert onnx_scores.shape == (50, 2)
    np.testing.assert_allclose(onnx_scores, torch_probabilities(run.model, features), atol=1e-5)


def test_report_has_a_test_section_per_task(trained: tuple[Path, dict[str, Any]]) -> None:
    from finalmlp.report import write_report

    folder, _ = trained
    page = write_report(folder / "run").read_text()
    assert "Test split: click" in page and "Test split: buy" in page


def test_bench_takes_a_task_weighted_monitor(tmp_path: Path) -> None:
    import yaml

    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump(config(tmp_path)))
    args = ["bench", "--data", str(data), "--models", "finalmlp", "--seeds", "1"]
    args += ["--out", str(tmp_path / "bench"), "--monitor", "click.auc=1,buy.auc=1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    table = (tmp_path / "bench" / "leaderboard.md").read_text()
    assert "| finalmlp | buy |" in table and "| finalmlp | click |" in table
    saved = json.loads((tmp_path / "bench" / "runs" / "finalmlp" / "seed2021" / "config.json")
                       .read_text())  # fmt: skip
    assert saved["train"]["monitor"] == {"click.auc": 1.0, "buy.auc": 1.0}
    bad = CliRunner().invoke(app, [*args[:-1], "sales.auc=1"])
    assert bad.exit_code == USER_ERROR_EXIT and "names task 'sales'" in bad.stderr
