"""Optional MLflow tracking, checked against a fake ``mlflow`` module that records its calls
(MLflow itself is not a dependency)."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
from tune_setup import BASE, SPACE, write_tune
from typer.testing import CliRunner

from finalmlp.cli.main import USER_ERROR_EXIT, app


class FakeMlflow(types.ModuleType):
    """Records every call as (name, args); tracks how many runs are open."""

    def __init__(self) -> None:
        super().__init__("mlflow")
        self.calls: list[tuple[str, Any]] = []
        self.open_runs = 0

    def start_run(
        self, run_name: str | None = None, nested: bool = False, tags: Any = None
    ) -> FakeRun:
        self.calls.append(("start_run", (run_name, nested)))
        self.open_runs += 1
        return FakeRun(self)

    def end_run(self, status: str = "FINISHED") -> None:
        self.calls.append(("end_run", status))
        self.open_runs -= 1

    def log_params(self, params: dict[str, Any]) -> None:
        self.calls.append(("log_params", dict(params)))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.calls.append(("log_metrics", (dict(metrics), step)))

    def set_tag(self, key: str, value: Any) -> None:
        self.calls.append(("set_tag", (key, value)))

    def log_artifact(self, path: str) -> None:
        self.calls.append(("log_artifact", Path(path).name))

    def named(self, name: str) -> list[Any]:
        return [args for call, args in self.calls if call == name]


class FakeRun:
    def __init__(self, mlflow: FakeMlflow) -> None:
        self.mlflow = mlflow

    def __enter__(self) -> FakeRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.mlflow.end_run()


@pytest.fixture
def fake_mlflow(monkeypatch: pytest.MonkeyPatch) -> FakeMlflow:
    fake = FakeMlflow()
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    return fake


def test_tune_logs_each_trial_as_a_nested_run(fake_mlflow: FakeMlflow, tmp_path: Path) -> None:
    out = tmp_path / "search"
    args = ["tune", str(write_tune(tmp_path)), "--trials", "2", "--out", str(out), "--mlflow"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    starts = fake_mlflow.named("start_run")
    assert starts[0][1] is False and starts[0][0].startswith("tune base-")  # the parent
    assert starts[1:] == [("trial 0", True), ("trial 1", True)]
    params = fake_mlflow.named("log_params")
    assert [set(p) for p in params] == [set(SPACE)] * 2
    assert params[0]["model.mlp2.hidden_units"] == "[16]"
    per_epoch = [m for m, step in fake_mlflow.named("log_metrics") if step is not None]
    assert [step for _, step in fake_mlflow.named("log_metrics") if step] == [1, 2, 1, 2]
    assert {"valid_auc", "valid_logloss"} <= set(per_epoch[0])
    finals = [m for m, step in fake_mlflow.named("log_metrics") if step is None]
    assert len(finals) == 2 and {"valid_auc", "test_auc"} <= set(finals[0])
    assert fake_mlflow.named("end_run")[:2] == ["FINISHED", "FINISHED"]
    assert {"tune_report.html", "best.yaml", "trials.csv"} <= set(fake_mlflow.named("log_artifact"))
    assert fake_mlflow.open_runs == 0


def test_train_logs_params_metrics_and_the_report(fake_mlflow: FakeMlflow, tmp_path: Path) -> None:
    write_tune(tmp_path)
    run = tmp_path / "run"
    args = ["train", str(tmp_path / "base.yaml"), "--out", str(run), "--mlflow"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (params,) = fake_mlflow.named("log_params")
    assert params["model.embedding_dim"] == "4"
    assert params["train.learning_rate"] == str(BASE["train"]["learning_rate"])
    assert params["data.features"] == "5"  # the feature list as a count
    steps = [step for _, step in fake_mlflow.named("log_metrics") if step is not None]
    assert len(steps) == 2  # one per validation
    assert {"valid_auc", "test_auc"} <= set(fake_mlflow.named("log_metrics")[-1][0])
    if (run / "report.html").is_file():
        assert fake_mlflow.named("log_artifact") == ["report.html"]
    assert fake_mlflow.open_runs == 0


@pytest.mark.parametrize("command", ["tune", "train"])
def test_without_mlflow_the_flag_says_how_to_install_it(
    command: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    tune = write_tune(tmp_path)
    config = tune if command == "tune" else tmp_path / "base.yaml"
    args = [command, str(config), "--out", str(tmp_path / "out"), "--mlflow"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == USER_ERROR_EXIT
    assert "pip install mlflow" in result.output
    assert not (tmp_path / "out").exists()  # nothing ran
