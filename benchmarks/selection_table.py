"""docs/selection.md tables: ``finalmlp select`` against the full model, over seeds.

Per seed: one select run (full model, search, retrain; timed inside), then the selected run's
test ECE and the test split's base-rate logloss. Prints a Markdown table and writes the raw
numbers as JSON.

Run (benchmarks only under the lock):
    flock /tmp/bench.lock nice -n 10 python benchmarks/selection_table.py CONFIG \
        --seeds 2021 2022 2023 --level field --keep-fraction 0.5 --max-epochs 5 \
        --select-epochs 4 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from finalmlp.bundle import load_run
from finalmlp.config import load_config
from finalmlp.inference import predict_proba
from finalmlp.metrics import expected_calibration_error
from finalmlp.report.build import load_splits
from finalmlp.select import select_from_config


def base_rate_logloss(labels: np.ndarray) -> float:
    p = float(np.mean(labels))
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def one_seed(
    config_path: Path, seed: int, args: argparse.Namespace, folder: Path
) -> dict[str, Any]:
    config = load_config(config_path)
    train = config.train.model_copy(
        update={"seed": seed, "progress": False, "max_epochs": args.max_epochs}
    )
    select = config.select or None
    update: dict[str, Any] = {"train": train}
    raw_select = {} if select is None else select.model_dump(exclude_unset=True)
    raw_select.update({"epochs": args.select_epochs, "final_temperature": args.final_temperature})
    if args.mask_lr is not None:
        raw_select["mask_learning_rate"] = args.mask_lr
    from finalmlp.schema import SelectConfig

    update["select"] = SelectConfig.model_validate(raw_select)
    config = config.model_copy(update=update)
    out = folder / f"seed{seed}"
    report = select_from_config(
        config, out, level=args.level, keep_fraction=args.keep_fraction, log=lambda *a, **k: None
    )
    run = load_run(out)
    test = load_splits(run)["test"]
    labels = np.asarray(test.label)[:, 0]
    probs = predict_proba(run.model, test, 16384)[:, 0]
    report["selected_test_ece"] = float(expected_calibration_error(labels, probs))
    report["test_base_rate_logloss"] = base_rate_logloss(labels)
    return report


def valid_ece(report: dict[str, Any], which: str) -> float:
    """ECE of the served (calibrated) scores on the validation split, from the training
    run's probability check; the full model is not kept, so its test ECE is not known."""
    check = report["probability_check"][which]
    return float(next(iter(check["tasks"].values()))["ece"])


def mean_std(values: list[float], digits: int = 4) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[2021, 2022, 2023])
    parser.add_argument("--level", default="field")
    parser.add_argument("--keep-fraction", type=float, default=None)
    parser.add_argument("--max-epochs", type=int, default=5)
    parser.add_argument("--select-epochs", type=int, default=4)
    parser.add_argument("--final-temperature", type=float, default=50.0)
    parser.add_argument("--mask-lr", type=float, default=0.05)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        reports = [one_seed(args.config, s, args, Path(tmp)) for s in args.seeds]
    if args.json is not None:
        args.json.write_text(json.dumps(reports, indent=2))
    col = lambda f: [f(r) for r in reports]  # noqa: E731
    print(f"| {args.config.name} | full | selected |")
    print("|---|---|---|")
    for split in ("valid", "test"):
        for metric in ("auc", "logloss"):
            print(
                f"| {split} {metric} | "
                f"{mean_std([r['metrics']['full'][split][metric] for r in reports])} | "
                f"{mean_std([r['metrics']['selected'][split][metric] for r in reports])} |"
            )
    print(
        f"| valid ECE (served scores) | {mean_std(col(lambda r: valid_ece(r, 'full')))} | "
        f"{mean_std(col(lambda r: valid_ece(r, 'selected')))} |"
    )
    print(f"| test ECE | | {mean_std(col(lambda r: r['selected_test_ece']))} |")
    print(f"| test base-rate logloss | {mean_std(col(lambda r: r['test_base_rate_logloss']))} | |")
    print(
        f"| parameters | {col(lambda r: r['parameters']['full'])} | "
        f"{col(lambda r: r['parameters']['selected'])} |"
    )
    print(
        f"| bundle bytes | {col(lambda r: r['bundle_bytes']['full'])} | "
        f"{col(lambda r: r['bundle_bytes']['selected'])} |"
    )
    print(
        f"| fields kept | {col(lambda r: len(r['fields']))} | "
        f"{col(lambda r: len(r['kept_fields']))} |"
    )
    print(
        f"| values kept | {col(lambda r: r['values']['total'])} | "
        f"{col(lambda r: r['values']['kept'])} |"
    )
    print(f"| kept fraction (gates) | | {col(lambda r: round(r['kept_fraction'], 3))} |")
    print(f"| time select / one training | | {col(lambda r: round(r['time_ratio'], 1))} |")
    for r in reports:
        print(f"seed dropped: {r['dropped_fields']}")


if __name__ == "__main__":
    main()
