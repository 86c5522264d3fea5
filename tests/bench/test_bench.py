from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from finalmlp.bench.leaderboard import markdown, summarize
from finalmlp.bench.runner import load_published, resolve_entries
from finalmlp.bench.suite import run_benchmark
from finalmlp.cli.main import app
from finalmlp.errors import ConfigError
from finalmlp.schema import ExperimentConfig

DATA = """\
data:
  recipe: synthetic
  synthetic: {num_rows: 3000, num_categorical: 4, num_numeric: 2, max_cardinality: 50, seed: 1}
  split: {valid_fraction: 0.2, test_fraction: 0.2, seed: 1}
  cache_dir: cache
model:
  name: finalmlp
  embedding_dim: 4
  mlp1: {hidden_units: [16], dropout: 0.0, batch_norm: false}
  mlp2: {hidden_units: [8], dropout: 0.0, batch_norm: false}
  fs_hidden_units: [8]
train: {batch_size: 512, max_epochs: 2, seed: 7, progress: false}
"""
DNN_LIKE = """\
data: {recipe: synthetic}
model:
  name: dualmlp
  embedding_dim: 4
  mlp1: {hidden_units: [8], dropout: 0.0, batch_norm: false}
  mlp2: {hidden_units: [8], dropout: 0.0, batch_norm: false}
train: {batch_size: 512, max_epochs: 1, seed: 100, progress: false}
"""


@pytest.fixture()
def configs(tmp_path: Path) -> Path:
    (tmp_path / "toy.yaml").write_text(DATA)
    (tmp_path / "toy_dualmlp.yaml").write_text(DNN_LIKE)
    return tmp_path / "toy.yaml"


def fake_metrics(config: ExperimentConfig) -> dict[str, Any]:
    """Deterministic stand-in for a training run: AUC depends on model and seed."""
    seed = config.train.seed
    bump = 0.01 if config.model.name == "finalmlp" else 0.0
    return {
        "valid": {"auc": 0.80 + bump + seed * 1e-4, "logloss": 0.5},
        "test": {"auc": 0.79 + bump + seed * 1e-4, "logloss": 0.5 - seed * 1e-4},
        "epochs": 3,
        "best_epoch": 2,
        "train_samples_per_s": 1000.0,
        "train_seconds": 1.0,
        "num_parameters": 42,
    }


class FakeTrainer:
    """Records calls and writes a minimal finished run directory, as save_run would."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, config: ExperimentConfig, run_dir: Path) -> dict[str, Any]:
        self.calls.append((config.model.name, config.train.seed))
        metrics = fake_metrics(config)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(config.model_dump_json())
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        (run_dir / "manifest.json").write_text("{}")
        return metrics


def test_names_resolve_to_configs_beside_the_data_config(configs: Path) -> None:
    entries = resolve_entries(configs, ["finalmlp", "dualmlp", "lr"])
    assert [e.label for e in entries] == ["finalmlp", "dualmlp", "lr"]
    assert entries[0].source == str(configs)  # the data config's own model
    assert entries[1].source.endswith("toy_dualmlp.yaml")
    assert entries[2].source == "default lr settings"
    # every model gets the data config's data section, whatever its own file says
    assert all(e.config.data == entries[0].config.data for e in entries)
    assert entries[1].config.data.synthetic is not None
    assert entries[1].config.data.synthetic.num_rows == 3000
    assert entries[1].config.train.seed == 100  # model file keeps its own train section


def test_unknown_model_and_duplicates_are_user_errors(configs: Path) -> None:
    with pytest.raises(ConfigError, match=r"no config for 'nope'.*not a model name"):
        resolve_entries(configs, ["nope"])
    with pytest.raises(ConfigError, match="lists a model twice"):
        resolve_entries(configs, ["lr", "lr"])


def test_benchmark_runs_every_model_and_seed_then_resumes_without_retraining(
    configs: Path, tmp_path: Path
) -> None:
    entries = resolve_entries(configs, ["finalmlp", "dualmlp"])
    trainer = FakeTrainer()
    out = tmp_path / "out"
    rows = run_benchmark(entries, 3, out, out / "runs", trainer, log=lambda _: None)
    expected = [("finalmlp", 7), ("finalmlp", 8), ("finalmlp", 9)]
    expected += [("dualmlp", 100), ("dualmlp", 101), ("dualmlp", 102)]
    assert trainer.calls == expected
    assert len(rows) == 6
    # Run again: nothing is retrained and the tables are the same.
    before = (out / "leaderboard.csv").read_text()
    again = FakeTrainer()
    run_benchmark(entries, 3, out, out / "runs", again, log=lambda _: None)
    assert again.calls == []
    assert (out / "leaderboard.csv").read_text() == before
    # A fourth seed trains only the new runs.
    more = FakeTrainer()
    run_benchmark(entries, 4, out, out / "runs", more, log=lambda _: None)
    assert more.calls == [("finalmlp", 10), ("dualmlp", 103)]


def test_tables_hold_every_run_and_the_mean_and_std(configs: Path, tmp_path: Path) -> None:
    entries = resolve_entries(configs, ["dualmlp", "finalmlp"])
    out = tmp_path / "out"
    published = {"finalmlp": {"auc": 0.75, "logloss": 0.4, "source": "paper"}}
    run_benchmark(entries, 2, out, out / "runs", FakeTrainer(), published, log=lambda _: None)
    with (out / "leaderboard.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["model"], r["seed"]) for r in rows] == [
        ("dualmlp", "100"),
        ("dualmlp", "101"),
        ("finalmlp", "7"),
        ("finalmlp", "8"),
    ]
    text = (out / "leaderboard.md").read_text()
    lines = [line for line in text.splitlines() if line.startswith("| finalmlp")]
    mean = statistics.fmean([0.80 + 7e-4, 0.80 + 8e-4])
    std = statistics.stdev([0.80 + 7e-4, 0.80 + 8e-4])
    assert f"{mean:.4f} ± {std:.4f}" in lines[0]
    assert f"{mean - 0.75:+.4f}" in lines[0]  # ours - published
    # sorted by mean test AUC: finalmlp (higher) first
    assert text.index("| finalmlp") < text.index("| dualmlp")
    assert (out / "auc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_finished_run_with_a_different_config_is_not_silently_reused(
    configs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    entries = resolve_entries(configs, ["dualmlp"])
    run_benchmark(entries, 1, out, out / "runs", FakeTrainer(), log=lambda _: None)
    (configs.parent / "toy_dualmlp.yaml").write_text(DNN_LIKE.replace("[8]", "[12]"))
    changed = resolve_entries(configs, ["dualmlp"])
    with pytest.raises(ConfigError, match="different config"):
        run_benchmark(changed, 1, out, out / "runs", FakeTrainer(), log=lambda _: None)


def test_summary_of_one_seed_has_zero_std() -> None:
    row = {
        "model": "m",
        "seed": 1,
        "valid_auc": 0.7,
        "valid_logloss": 0.5,
        "test_auc": 0.6,
        "test_logloss": 0.4,
        "epochs": 2,
        "best_epoch": 1,
        "train_samples_per_s": 10.0,
        "train_seconds": 1.0,
        "parameters": 3,
    }
    (summary,) = summarize([row])
    assert summary["test_auc_std"] == 0.0
    assert "0.6000 ± 0.0000" in markdown([summary], None, "cmd", "t")


def test_published_file_is_validated(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("dnn: 0.98\n")
    with pytest.raises(ConfigError, match="expected `model:"):
        load_published(bad)
    shipped = Path(__file__).parents[2] / "benchmarks" / "published" / "frappe_x1.yaml"
    assert load_published(shipped)["finalmlp"]["auc"] == 0.9861


def test_bench_command_trains_for_real_and_resumes(configs: Path, tmp_path: Path) -> None:
    out = tmp_path / "res"
    args = ["bench", "--data", str(configs), "--models", "finalmlp,dualmlp"]
    args += ["--seeds", "2", "--out", str(out)]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert first.output.count("epochs (") == 4
    assert "checkpoint" not in first.output  # was "no checkpoint found: from step 0"
    metrics = json.loads((out / "runs" / "dualmlp" / "seed101" / "metrics.json").read_text())
    with (out / "leaderboard.csv").open() as handle:
        rows = {(r["model"], r["seed"]): r for r in csv.DictReader(handle)}
    assert float(rows[("dualmlp", "101")]["test_auc"]) == pytest.approx(metrics["test"]["auc"])
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    assert second.output.count("finished earlier") == 4
    bad = CliRunner().invoke(app, ["bench", "--data", str(configs), "--models", "x", "--out", "o"])
    assert bad.exit_code == 2
    assert "no config for 'x'" in bad.output


def test_runtime_settings_do_not_invalidate_finished_runs(configs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    entries = resolve_entries(configs, ["dualmlp"])
    run_benchmark(entries, 1, out, out / "runs", FakeTrainer(), log=lambda _: None)
    again = FakeTrainer()
    run_benchmark(entries, 1, out, out / "runs", again, log=lambda _: None, num_threads=1)
    assert again.calls == []


def test_checkpoints_of_an_interrupted_run_with_another_config_are_dropped(
    configs: Path, tmp_path: Path
) -> None:
    from finalmlp.bench.runner import run_one

    (entry,) = resolve_entries(configs, ["dualmlp"])
    run_dir = tmp_path / "run"
    seen: list[bool] = []

    def interrupted(config: ExperimentConfig, where: Path) -> dict[str, Any]:
        (where / "checkpoints" / "step-1.pt").write_bytes(b"x")
        raise KeyboardInterrupt

    def check(config: ExperimentConfig, where: Path) -> dict[str, Any]:
        seen.append((where / "checkpoints" / "step-1.pt").exists())
        return fake_metrics(config)

    with pytest.raises(KeyboardInterrupt):
        run_one(entry, 1, run_dir, interrupted)
    run_one(entry, 1, run_dir, check)  # same config: the checkpoint is kept for --resume
    changed = entry.config.model_copy(
        update={"model": entry.config.model.model_copy(update={"embedding_dim": 6})}
    )
    run_one(type(entry)(entry.label, changed, entry.source), 1, run_dir, check)
    assert seen == [True, False]
