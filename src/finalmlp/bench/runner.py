"""Train every model x seed on one dataset and collect the results (``finalmlp bench``).

Each entry of ``--models`` names a config: a YAML path, or a name resolved beside the data
config as ``<data stem>_<name>.yaml`` (``configs/frappe_x1_deepfm.yaml``), or the data config
itself when its model has that name, or a registered model with its default settings. The data
section always comes from the data config, so every model sees the same rows and features.

Each run is a normal run directory ``<runs>/<label>/seed<seed>/``. A finished run (manifest
written) is read back instead of retrained, and an interrupted one continues from its newest
checkpoint, so running the same command again resumes the benchmark.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from finalmlp.config import format_validation_error, load_config, parse_config
from finalmlp.errors import ConfigError
from finalmlp.io import atomic_write_text
from finalmlp.models import MODELS
from finalmlp.schema import ExperimentConfig

RESULT_COLUMNS = (
    "model",
    "seed",
    "valid_auc",
    "valid_logloss",
    "test_auc",
    "test_logloss",
    "epochs",
    "best_epoch",
    "train_samples_per_s",
    "train_seconds",
    "parameters",
)


@dataclass(frozen=True)
class BenchEntry:
    """One model of the benchmark: its label in the tables and its config (data included)."""

    label: str
    config: ExperimentConfig
    source: str  # where the model/train settings came from


def resolve_entries(data_config: Path, names: list[str]) -> list[BenchEntry]:
    """The configs for ``names`` with the data section of ``data_config``."""
    base = load_config(data_config)
    labels = [_label(name) for name in names]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--models lists a model twice: {names}")
    return [_entry(base, data_config, name) for name in names]


def _label(name: str) -> str:
    return Path(name).stem if name.endswith((".yaml", ".yml")) else name


def _entry(base: ExperimentConfig, data_config: Path, name: str) -> BenchEntry:
    candidates = [Path(name)] if name.endswith((".yaml", ".yml")) else []
    candidates.append(data_config.parent / f"{data_config.stem}_{name}.yaml")
    for path in candidates:
        if path.is_file():
            return BenchEntry(_label(name), _with_data(load_config(path), base), str(path))
    if base.model.name == name:
        return BenchEntry(name, base, str(data_config))
    if name in MODELS:
        raw = {"data": {}, "model": {"name": name}, "train": base.train.model_dump()}
        config = _with_data(_parse_model_only(raw, name), base)
        return BenchEntry(name, config, f"default {name} settings")
    looked = ", ".join(str(p) for p in candidates)
    raise ConfigError(
        f"--models: no config for {name!r} (looked for {looked}) and it is not a model name; "
        f"models: {', '.join(sorted(MODELS))}"
    )


def _parse_model_only(raw: dict[str, Any], name: str) -> ExperimentConfig:
    raw["data"] = {"recipe": "synthetic"}  # placeholder, replaced by the data config's data
    try:
        return parse_config(raw, origin=f"default config of {name}")
    except ConfigError as exc:
        raise ConfigError(f"{exc}; write a config file for {name!r}") from None


def _with_data(config: ExperimentConfig, base: ExperimentConfig) -> ExperimentConfig:
    merged = config.model_dump()
    merged["data"] = base.data.model_dump()
    return ExperimentConfig.model_validate(merged)


def plan_runs(entries: list[BenchEntry], seeds: int) -> Iterator[tuple[BenchEntry, int]]:
    """Every (entry, seed) pair; seeds are ``train.seed + i`` for i < seeds."""
    for entry in entries:
        for i in range(seeds):
            yield entry, entry.config.train.seed + i


def run_one(
    entry: BenchEntry,
    seed: int,
    run_dir: Path,
    train: Callable[[ExperimentConfig, Path], dict[str, Any]],
    num_threads: int | None = None,
) -> tuple[dict[str, Any], bool]:
    """Train (or read back) one model x seed; returns (result row, whether it was reused)."""
    updates: dict[str, Any] = {"seed": seed, "progress": False}
    if num_threads is not None:
        updates["num_threads"] = num_threads
    config = entry.config.model_copy(
        update={"train": entry.config.train.model_copy(update=updates)}
    )
    metrics = _finished(run_dir, config)
    reused = metrics is not None
    if metrics is None:
        _match_checkpoints(run_dir, config)
        metrics = train(config, run_dir)
    return result_row(entry.label, seed, metrics), reused


def _finished(run_dir: Path, config: ExperimentConfig) -> dict[str, Any] | None:
    if not (run_dir / "manifest.json").is_file():
        return None
    # Read back through the schema: settings added since that run take their defaults.
    text = (run_dir / "config.json").read_text(encoding="utf-8")
    saved = json.loads(ExperimentConfig.model_validate_json(text).model_dump_json())
    if _without_runtime(saved) != _without_runtime(json.loads(config.model_dump_json())):
        raise ConfigError(
            f"{run_dir} holds a finished run with a different config than this benchmark's; "
            "delete it to retrain, or pass a new --out"
        )
    metrics: dict[str, Any] = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    return metrics


def _match_checkpoints(run_dir: Path, config: ExperimentConfig) -> None:
    """Checkpoints of an interrupted run resume it only if they were made with this config."""
    folder = run_dir / "checkpoints"
    marker = folder / "bench-config.json"
    expected = json.dumps(_without_runtime(json.loads(config.model_dump_json())), sort_keys=True)
    if folder.exists() and (not marker.is_file() or marker.read_text() != expected):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, expected)


# Settings that change where or how fast a run goes, not what it learns.
_RUNTIME_KEYS = ("num_threads", "progress", "device", "distributed_timeout_s")


def _without_runtime(config: dict[str, Any]) -> dict[str, Any]:
    train = {k: v for k, v in config.get("train", {}).items() if k not in _RUNTIME_KEYS}
    return {**config, "train": train}


def result_row(label: str, seed: int, metrics: dict[str, Any]) -> dict[str, Any]:
    """One run's row: the RESULT_COLUMNS, then ``<split>_<task>_<metric>`` for each task of a
    multi-task run (``test_auc`` is then the mean over tasks)."""
    row = {
        "model": label,
        "seed": seed,
        "valid_auc": metrics["valid"]["auc"],
        "valid_logloss": metrics["valid"]["logloss"],
        "test_auc": metrics["test"]["auc"],
        "test_logloss": metrics["test"]["logloss"],
        "epochs": metrics["epochs"],
        "best_epoch": metrics["best_epoch"],
        "train_samples_per_s": metrics["train_samples_per_s"],
        "train_seconds": metrics["train_seconds"],
        "parameters": metrics["num_parameters"],
    }
    for split in ("test", "valid"):
        for key, value in metrics[split].items():
            task, dot, metric = key.rpartition(".")
            if dot and metric in ("auc", "logloss"):
                row[f"{split}_{task}_{metric}"] = value
    return row


def with_monitor(entries: list[BenchEntry], monitor: dict[str, float]) -> list[BenchEntry]:
    """The entries with ``train.monitor`` replaced (checked against each entry's tasks).

    Raises:
        ConfigError: a monitor key that does not fit the data's tasks.
    """
    out = []
    for entry in entries:
        raw = entry.config.model_dump()
        raw["train"]["monitor"] = monitor
        try:
            config = ExperimentConfig.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(f"--monitor: {format_validation_error(exc)}") from None
        out.append(BenchEntry(entry.label, config, entry.source))
    return out


def load_published(path: Path) -> dict[str, dict[str, Any]]:
    """Published figures: a YAML mapping ``label: {auc, logloss, source}``."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"--published {path}: cannot read it: {exc}") from None
    if not isinstance(raw, dict) or not all(
        isinstance(v, dict) and "auc" in v for v in raw.values()
    ):
        raise ConfigError(f"--published {path}: expected `model: {{auc: .., logloss: ..}}` items")
    return {str(k): dict(v) for k, v in raw.items()}
