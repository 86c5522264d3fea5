"""The run directory: everything needed to score raw rows, as JSON and safetensors (no pickle).

::

    RUN_DIR/
    ├── manifest.json     format version, package versions, model name, content hash
    ├── config.json       the resolved config (recipes applied, paths absolute)
    ├── processor.json    the fitted FeatureProcessor
    ├── model.safetensors the weights
    └── metrics.json      valid/test metrics, epochs, speed, history
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from finalmlp import __version__
from finalmlp.errors import ConfigError, DataError
from finalmlp.features.processor import FeatureProcessor
from finalmlp.io import atomic_directory, atomic_write_text
from finalmlp.models import build_model
from finalmlp.models.base import CTRModel
from finalmlp.schema import ExperimentConfig

FORMAT_VERSION = 1
CONTENT_FILES = ("config.json", "processor.json", "model.safetensors")


@dataclass
class Run:
    path: Path
    config: ExperimentConfig
    processor: FeatureProcessor
    model: CTRModel
    metrics: dict[str, Any]


def save_run(
    out: Path,
    config: ExperimentConfig,
    processor: FeatureProcessor,
    model: CTRModel,
    metrics: dict[str, Any],
) -> None:
    """Write the run directory atomically (a crash leaves the previous one intact).

    Raises:
        ConfigError: ``out`` exists and is neither empty nor a run directory (never deleted).
    """
    out = Path(out)
    check_run_target(out)
    with atomic_directory(out) as tmp:
        atomic_write_text(tmp / "config.json", config.model_dump_json(indent=2))
        processor.save(tmp / "processor.json")
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        atomic_write_text(tmp / "metrics.json", json.dumps(json_safe(metrics), indent=2))
        manifest = {
            "format_version": FORMAT_VERSION,
            "finalmlp": __version__,
            "torch": torch.__version__,
            "model": config.model.name,
            "content_sha256": content_hash(tmp),
        }
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=2))


def check_run_target(out: Path) -> None:
    """``out`` may be written: missing, an empty directory, or an earlier run directory."""
    if not out.exists():
        return
    if out.is_dir() and (
        (out / "manifest.json").is_file() or {p.name for p in out.iterdir()} <= {"checkpoints"}
    ):
        return  # an earlier run, an empty folder, or a run that was stopped mid-way
    raise ConfigError(
        f"{out} exists and is not a finalmlp run directory; refusing to replace it. "
        "Pass a new or empty --out directory"
    )


def json_safe(value: Any) -> Any:
    """NaN and infinities (e.g. AUC of a single-class split) become null: valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def content_hash(directory: Path) -> str:
    """sha256 over the files that define the model (a missing file hashes as missing)."""
    digest = hashlib.sha256()
    for name in CONTENT_FILES:
        file = directory / name
        digest.update(name.encode())
        digest.update(file.read_bytes() if file.is_file() else b"<missing>")
    return digest.hexdigest()


def load_run(path: str | Path) -> Run:
    """Load a run directory written by ``finalmlp train`` (model in eval mode, on the CPU).

    Raises:
        DataError: not a run directory, another format version, or files that do not match
            their manifest (edited, truncated or mixed from different runs).
    """
    path = Path(path)
    manifest = _read_json(path / "manifest.json", path)
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise DataError(
            f"{path} has run format version {version!r}; this finalmlp {__version__} reads "
            f"version {FORMAT_VERSION}. Re-train, or use the finalmlp version that wrote it"
        )
    if manifest.get("content_sha256") != content_hash(path):
        raise DataError(
            f"{path}: config.json, processor.json or model.safetensors do not match "
            "manifest.json (edited, truncated or copied from another run); re-train or "
            "restore the directory"
        )
    try:
        config = ExperimentConfig.model_validate(_read_json(path / "config.json", path))
        processor = FeatureProcessor.load(path / "processor.json")
        model = build_model(processor.layout, config.model)
        model.load_state_dict(load_file(str(path / "model.safetensors")))
    except (ValidationError, OSError, SafetensorError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot load the run in {path}: {first}") from None
    model.eval()
    return Run(path, config, processor, model, _read_json(path / "metrics.json", path))


def _read_json(file: Path, run_dir: Path) -> dict[str, Any]:
    if not file.is_file():
        raise DataError(
            f"{run_dir} is not a finalmlp run directory ({file.name} missing); "
            "pass the --out directory of `finalmlp train`"
        )
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{file} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(f"{file} must hold a JSON object")
    return data
