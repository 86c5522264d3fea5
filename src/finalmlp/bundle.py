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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from finalmlp import __version__
from finalmlp.errors import DataError
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
    """Write the run directory atomically (a crash leaves the previous one intact)."""
    with atomic_directory(Path(out)) as tmp:
        atomic_write_text(tmp / "config.json", config.model_dump_json(indent=2))
        processor.save(tmp / "processor.json")
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        atomic_write_text(tmp / "metrics.json", json.dumps(metrics, indent=2))
        manifest = {
            "format_version": FORMAT_VERSION,
            "finalmlp": __version__,
            "torch": torch.__version__,
            "model": config.model.name,
            "content_sha256": content_hash(tmp),
        }
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=2))


def content_hash(directory: Path) -> str:
    digest = hashlib.sha256()
    for name in CONTENT_FILES:
        digest.update(name.encode())
        digest.update((directory / name).read_bytes())
    return digest.hexdigest()


def load_run(path: str | Path) -> Run:
    """Load a run directory written by ``finalmlp train`` (model in eval mode)."""
    path = Path(path)
    manifest = _read_json(path / "manifest.json", path)
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise DataError(
            f"{path} has run format version {version!r}; this finalmlp {__version__} reads "
            f"version {FORMAT_VERSION}. Re-train, or use the finalmlp version that wrote it"
        )
    config = ExperimentConfig.model_validate(_read_json(path / "config.json", path))
    processor = FeatureProcessor.load(path / "processor.json")
    model = build_model(processor.layout, config.model)
    try:
        state = load_file(str(path / "model.safetensors"))
    except (OSError, SafetensorError) as exc:
        raise DataError(f"cannot read weights {path / 'model.safetensors'}: {exc}") from None
    model.load_state_dict(state)
    model.eval()
    metrics = _read_json(path / "metrics.json", path)
    return Run(path, config, processor, model, metrics)


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
