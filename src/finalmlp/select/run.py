"""``finalmlp select``: the full model, the OptFS search, and the retrained selected model.

1. train the config's model as ``finalmlp train`` would (the full model: its metrics, size and
   training time are the baseline);
2. search with gates (:mod:`finalmlp.select.search`), tuning the sparsity to a budget if one is
   asked for;
3. make the gates binary, prune vocabularies, tables and fields (:mod:`finalmlp.select.prune`);
4. rewind to the weights after ``select.rewind_epoch`` search epochs, moved into the smaller
   model, and retrain it on the kept set with the config's training settings (early stopping);
5. write the run directory of the selected model (what evaluate, predict, export, serve and
   report read), plus ``selection.json`` and ``selected.yaml``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from finalmlp.bundle import CONTENT_FILES, check_run_target, json_safe, save_run
from finalmlp.data.dataset import PreparedData, prepare_data
from finalmlp.errors import ConfigError
from finalmlp.io import atomic_write_text
from finalmlp.models import build_model
from finalmlp.models.base import CTRModel
from finalmlp.schema import ExperimentConfig, SelectConfig
from finalmlp.select.gates import embedding_modules
from finalmlp.select.prune import (
    binarize,
    remap_data,
    selected_config,
    transfer_weights,
)
from finalmlp.select.search import Log, search_with_budget
from finalmlp.train.progress import console
from finalmlp.train.run import resolve_device, train_from_config

SELECTION_FILE = "selection.json"
SELECTED_CONFIG = "selected.yaml"


def select_settings(
    config: ExperimentConfig, level: str | None = None, keep_fraction: float | None = None
) -> SelectConfig:
    """The config's ``select`` section with the command line's overrides, checked.

    Raises:
        ConfigError: a budget outside (0, 1], an unknown field in keep_fields, several tasks.
    """
    if keep_fraction is not None and not 0 < keep_fraction <= 1:
        raise ConfigError(
            f"--keep-fraction must be in (0, 1], got {keep_fraction}; e.g. 0.5 keeps about half "
            "of the feature values"
        )
    base = config.select or SelectConfig()
    update: dict[str, Any] = {}
    if level is not None:
        update["level"] = level
    if keep_fraction is not None:
        update["keep_fraction"] = keep_fraction
    settings = SelectConfig.model_validate({**base.model_dump(exclude_unset=True), **update})
    names = config.data.feature_names
    unknown = [f for f in settings.keep_fields if f not in names]
    if unknown:
        raise ConfigError(f"select.keep_fields names {unknown}, not features; expected {names}")
    if len(config.data.tasks) > 1:
        raise ConfigError(
            f"finalmlp select searches one task; data.labels has {len(config.data.tasks)} "
            f"({config.data.task_names}). Select for one task (labels: [name]) and train the "
            "multi-task model on its selected.yaml features"
        )
    return settings


def select_from_config(
    config: ExperimentConfig,
    out: Path,
    level: str | None = None,
    keep_fraction: float | None = None,
    log: Log = console.print,
) -> dict[str, Any]:
    """Run the whole selection; returns the contents of ``selection.json``."""
    settings = select_settings(config, level, keep_fraction)
    out = Path(out)
    check_run_target(out)
    started = time.perf_counter()
    data = prepare_data(config.data)
    if data.train_stream is not None:
        raise ConfigError(
            "finalmlp select holds the training rows in memory; remove data.streaming"
        )
    processor, layout = data.processor, data.processor.layout
    _check_gateable(config, layout)
    config = config.model_copy(update={"select": settings})
    full_started = time.perf_counter()
    log("[bold]1/3 full model[/bold]")
    full = train_from_config(config, None, prepared=data)
    full_seconds = time.perf_counter() - full_started
    log(f"[bold]2/3 search[/bold] ({settings.level} level)")
    device = resolve_device(config.train.device)
    search_started = time.perf_counter()
    result, searches = search_with_budget(config, data, settings, device, log)
    search_seconds = time.perf_counter() - search_started
    selection = binarize(result.gates, processor)
    chosen, context_notes = selected_config(config, selection)
    pruned = remap_data(data, processor, selection)
    rewound = build_model(layout, config.model, 1)
    rewound.load_state_dict(result.rewind_state)
    transfer: dict[str, list[str]] = {}

    def rewind(model: CTRModel) -> None:
        transfer.update(
            transfer_weights(
                rewound, model, layout, pruned.processor.layout, list(processor.tables_), selection
            )
        )

    for note in selection.notes + context_notes:
        log(f"note: {note}", markup=False)
    log(
        f"[bold]3/3 retrain[/bold] on {len(selection.kept_fields)} of {layout.num_fields} fields, "
        f"rewound to search epoch {settings.rewind_epoch}"
    )
    retrain_started = time.perf_counter()
    selected = train_from_config(chosen, out, prepared=pruned, init=rewind)
    retrain_seconds = time.perf_counter() - retrain_started
    total_seconds = time.perf_counter() - started
    report = {
        "level": settings.level,
        "settings": settings.model_dump(mode="json"),
        "sparsity": result.sparsity,
        "keep_fraction_target": settings.keep_fraction,
        "kept_fraction": selection.fraction,
        "searches": searches,
        "search_history": result.history,
        "fields": selection.fields,
        "dropped_fields": selection.dropped_fields,
        "kept_fields": selection.kept_fields,
        "values": {
            "kept": sum(r["kept"] for r in selection.fields),
            "total": sum(r["total"] for r in selection.fields),
        },
        "notes": selection.notes + context_notes,
        "parameters": {"full": full["num_parameters"], "selected": selected["num_parameters"]},
        "bundle_bytes": {"full": _full_bundle_bytes(config, data), "selected": _bytes(out)},
        "metrics": {
            "full": {split: full[split] for split in ("valid", "test")},
            "selected": {split: selected[split] for split in ("valid", "test")},
        },
        "probability_check": {
            "full": full.get("probability_check"),
            "selected": selected.get("probability_check"),
        },
        "epochs": {"full": full["epochs"], "selected": selected["epochs"]},
        "seconds": {
            "full_training": full_seconds,
            "search": search_seconds,
            "retrain": retrain_seconds,
            "total": total_seconds,
        },
        "time_ratio": total_seconds / max(full_seconds, 1e-9),
        "weights": {key: len(names) for key, names in transfer.items()},
        "reinitialised": transfer.get("reinitialised", []),
    }
    atomic_write_text(out / SELECTION_FILE, json.dumps(json_safe(report), indent=2))
    text = yaml.safe_dump(config_text(chosen), sort_keys=False, allow_unicode=True)
    header = (
        f"# finalmlp select ({settings.level} level): the config with the "
        f"{len(selection.dropped_fields)} dropped field(s) removed.\n"
    )
    atomic_write_text(out / SELECTED_CONFIG, header + text)
    return report


def config_text(config: ExperimentConfig) -> dict[str, Any]:
    """The config as YAML-ready data, without the keys left at their defaults (the feature
    types and the model name are kept: they say which kind each one is)."""
    raw = config.model_dump(mode="json", exclude_defaults=True)
    raw["data"]["features"] = [
        {**f.model_dump(mode="json", exclude_defaults=True), "type": f.type}
        for f in config.data.features
    ]
    raw["model"] = {"name": config.model.name, **raw.get("model", {})}
    return raw


def _check_gateable(config: ExperimentConfig, layout: Any) -> None:
    """Raises ConfigError when the model has no FeatureEmbedding to gate."""
    model = build_model(layout, config.model, 1)
    if not embedding_modules(model):
        raise ConfigError(
            f"model {config.model.name!r} has no field embedding (FeatureEmbedding) to gate, so "
            "finalmlp select cannot search its features; use a model of the zoo"
        )


def _bytes(directory: Path) -> int:
    """Bytes of the files that make up a bundle's model (config, processor, weights)."""
    return sum((directory / name).stat().st_size for name in CONTENT_FILES)


def _full_bundle_bytes(config: ExperimentConfig, data: PreparedData) -> int:
    """The bundle size of the full model (the same files, weights of the same shapes)."""
    torch.manual_seed(0)
    model = build_model(data.processor.layout, config.model, 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "full"
        save_run(path, config, data.processor, model, {})
        return _bytes(path)
