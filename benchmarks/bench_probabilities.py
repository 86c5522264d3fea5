"""Are the probabilities usable? Test AUC, logloss and ECE against the base-rate logloss, for
training defaults (issue 16, point 1), on real sets and variants of them.

Sets (built under --work from ../shared/data, never copied into the project):

- ``frappe_x1``: configs/frappe_x1.yaml as it is (its AUC must not drop);
- ``frappe_low``: frappe_x1 with all but 1% of the positives of every split dropped (seeded):
  a click rate of about 0.5%;
- ``census_low``: UCI Census-Income (KDD), the income task, seeded 80/10/10, all but 10% of
  the positives dropped (about 0.6%);
- ``criteo_small``: the first 8k Criteo rows (7,200 train; about 21% clicks);
- ``frappe_10k``: 10,000 frappe_x1 train rows, 3,000 valid and 10,000 test rows (seeded);
- ``frappe_low_small``: 30,000 frappe_low train rows and 10,000 valid rows (seeded), its
  whole test split: few clicks and few optimizer steps at once.

Every set but frappe_x1 takes the config a user writes from the README: FinalMLP with the
Frappe model block (gates without context), batch 4096, Adam 1e-3, embedding L2 1e-5, patience
2, and the default monitor. A variant overrides ``train`` keys (``before``: the old defaults,
spelled out; ``after``: the package defaults). Each run records the served probabilities
(through the run's calibration, if any) and, when the run has none, a Platt calibration fitted
on its validation split afterwards (``platt_posthoc``).

Usage:
    nice -n 10 flock /tmp/bench.lock .venv/bin/python benchmarks/bench_probabilities.py \
        --sets frappe_low,census_low,criteo_small,frappe_10k --variants before,after \
        --out docs/results/probabilities.jsonl
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import seeded_runs
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "src"))

USER_MODEL = {
    "name": "finalmlp",
    "embedding_dim": 10,
    "mlp1": {"hidden_units": [400], "dropout": 0.2, "batch_norm": True},
    "mlp2": {"hidden_units": [100], "dropout": 0.2, "batch_norm": True},
    "fs_hidden_units": [400],
    "num_heads": 5,
}
USER_TRAIN = {"batch_size": 4096, "learning_rate": 1e-3, "embedding_l2": 1e-5, "patience": 2}
VARIANTS: dict[str, dict[str, Any]] = {
    "before": {"monitor": {"auc": 1}, "calibration": "none", "keep_better_than_base_rate": False},
    "monitor_logloss": {
        "monitor": {"auc": 1, "logloss": -1},
        "calibration": "none",
        "keep_better_than_base_rate": False,
    },
    "guard": {"monitor": {"auc": 1}, "calibration": "none", "keep_better_than_base_rate": True},
    "platt": {"monitor": {"auc": 1}, "calibration": "platt", "keep_better_than_base_rate": False},
    "after": {},  # the package's defaults
}


def drop_positives(frame: pl.DataFrame, label: str, keep: float, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    positive = (frame[label] == 1).to_numpy()
    kept = ~positive | (rng.random(frame.height) < keep)
    return frame.filter(pl.Series(kept))


def make_sets(work: Path) -> dict[str, dict[str, Any]]:
    """Write the variant files under ``work``; return each set's data section."""
    frappe = SHARED / "frappe_x1"
    sets: dict[str, dict[str, Any]] = {}
    low = work / "frappe_low"
    low.mkdir(parents=True, exist_ok=True)
    for i, split in enumerate(("train", "valid", "test")):
        target = low / f"{split}.csv"
        if not target.is_file():
            frame = pl.read_csv(frappe / f"{split}.csv", infer_schema=False)
            frame = frame.with_columns(pl.col("label").cast(pl.Int64))
            drop_positives(frame, "label", 0.01, 16 + i).write_csv(target)
    sets["frappe_low"] = {
        "recipe": "frappe_x1",
        **{s: str(low / f"{s}.csv") for s in ("train", "valid", "test")},
    }
    small = work / "frappe_10k"
    small.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", 10_000), ("valid", 3_000), ("test", 10_000)):
        target = small / f"{split}.csv"
        if not target.is_file():
            frame = pl.read_csv(frappe / f"{split}.csv", infer_schema=False)
            frame.sample(rows, seed=16).write_csv(target)
    low_small = work / "frappe_low_small"
    low_small.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", 30_000), ("valid", 10_000), ("test", None)):
        target = low_small / f"{split}.csv"
        if not target.is_file():
            frame = pl.read_csv(low / f"{split}.csv", infer_schema=False)
            (frame if rows is None else frame.sample(rows, seed=16)).write_csv(target)
    sets["frappe_low_small"] = {
        "recipe": "frappe_x1",
        **{s: str(low_small / f"{s}.csv") for s in ("train", "valid", "test")},
    }
    sets["frappe_10k"] = {
        "recipe": "frappe_x1",
        **{s: str(small / f"{s}.csv") for s in ("train", "valid", "test")},
    }
    census = work / "census_low.csv"
    if not census.is_file():
        from finalmlp.data.recipes import CENSUS_COLUMNS

        frame = pl.read_csv(
            SHARED / "census_income_kdd" / "census-income.test.gz",
            has_header=False,
            new_columns=list(CENSUS_COLUMNS),
            infer_schema=False,
        )
        frame = frame.with_columns(
            (pl.col("income").str.strip_chars() == "50000+.").cast(pl.Int64).alias("_y")
        )
        drop_positives(frame, "_y", 0.1, 16).drop("_y").write_csv(census, include_header=False)
    sets["census_low"] = {
        "recipe": "census_income",
        "train": str(census),
        "labels": [
            {"name": "income", "column": "income", "label_map": {"- 50000.": 0, "50000+.": 1}}
        ],
    }
    criteo = SHARED / "criteo_small"
    sets["criteo_small"] = {
        "recipe": "criteo",
        "train": str(criteo / "train.csv"),
        "valid": str(criteo / "dev.csv"),
        "test": str(criteo / "test.csv"),
    }
    return sets


def config_for(name: str, data: dict[str, Any] | None, variant: str, seed: int) -> dict[str, Any]:
    if name == "frappe_x1":
        config = yaml.safe_load((ROOT / "configs" / "frappe_x1.yaml").read_text())
        frappe = SHARED / "frappe_x1"
        config["data"].update({s: str(frappe / f"{s}.csv") for s in ("train", "valid", "test")})
        for key in ("monitor",):  # the package default now decides
            config["train"].pop(key, None)
    else:
        assert data is not None
        config = {"data": dict(data), "model": dict(USER_MODEL), "train": dict(USER_TRAIN)}
    config["train"].update(VARIANTS[variant], seed=seed, progress=False)
    return config


def measure(config: dict[str, Any], out: Path) -> dict[str, Any]:
    import warnings

    import finalmlp
    from finalmlp.calibration import fit_calibration
    from finalmlp.inference import predict_proba
    from finalmlp.metrics import expected_calibration_error, log_loss, roc_auc
    from finalmlp.predict import run_splits
    from finalmlp.train.probability import base_rate_logloss

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = finalmlp.train(config, out=out)
    seconds = time.perf_counter() - started
    bundle = run._run
    splits = run_splits(bundle)
    raw = {n: predict_proba(bundle.model, s, 16384)[:, 0] for n, s in splits.items()}  # (N,)
    labels = {n: np.asarray(s.label)[:, 0] for n, s in splits.items()}
    rate = run.metrics["probability_check"]["tasks"][run.tasks[0]]["base_rate"]

    def numbers(probs: np.ndarray) -> dict[str, float]:
        y = labels["test"]
        return {
            "auc": roc_auc(y, probs),
            "logloss": log_loss(y, probs),
            "ece": expected_calibration_error(y, probs),
        }

    served = bundle.calibrate(raw["test"][:, None])[:, 0]
    record = {
        "test": numbers(served),
        "test_raw": numbers(raw["test"]),
        "test_base_rate_logloss": base_rate_logloss(labels["test"], rate),
        "base_rate": rate,
        "valid_check": run.metrics["probability_check"],
        "epochs": run.metrics["epochs"],
        "best_epoch": run.metrics["best_epoch"],
        "seconds": seconds,
        "history": [
            {"epoch": h["epoch"], **{f"valid_{k}": v for k, v in h["metrics"].items()}}
            for h in run.metrics["history"]
        ],
    }
    if bundle.calibration is None:
        scored = {n: (labels[n], raw[n]) for n in ("valid", "test")}
        calibration, _ = fit_calibration("platt", scored)
        record["platt_posthoc"] = numbers(calibration.transform(raw["test"][:, None])[:, 0])
    return record


def table(path: Path) -> str:
    """The markdown table of a results file: per set and variant, mean ± std over seeds."""
    groups = seeded_runs.grouped(path, "variant")
    rows = [
        "| set | variant | seeds | test AUC | test logloss | test ECE | base-rate logloss "
        "| epochs (best) | flagged |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(values: list[float]) -> str:
        return seeded_runs.mean_std(values, always=False)

    for (name, variant), records in groups.items():
        test = [r["test"] for r in records]
        flagged = sum(r["valid_check"]["flagged"] for r in records)
        rows.append(
            f"| {name} | {variant} | {len(records)} | {cell([t['auc'] for t in test])} "
            f"| {cell([t['logloss'] for t in test])} | {cell([t['ece'] for t in test])} "
            f"| {np.mean([r['test_base_rate_logloss'] for r in records]):.4f} "
            f"| {np.mean([r['epochs'] for r in records]):.1f} "
            f"({np.mean([r['best_epoch'] for r in records]):.1f}) | {flagged}/{len(records)} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = seeded_runs.parser(
        __doc__,
        sets="frappe_low,census_low,criteo_small,frappe_10k",
        seeds="2021",
        work=Path("/tmp/bench_probabilities"),
        out=ROOT / "docs/results/probabilities.jsonl",
    )
    parser.add_argument("--variants", default="before,after")
    args = parser.parse_args()
    if args.table:
        print(table(args.out))
        return
    sets = make_sets(args.work)
    for name in args.sets.split(","):
        for variant in args.variants.split(","):
            for seed in seeded_runs.seeds(args.seeds):
                config = config_for(name, sets.get(name), variant, seed)
                config["data"]["cache_dir"] = str(args.work / "cache")
                run_dir = args.work / "runs" / f"{name}-{variant}-{seed}"
                record = {"set": name, "variant": variant, "seed": seed}
                record.update(measure(config, run_dir))
                test = record["test"]
                print(
                    f"{name:<13} {variant:<16} seed {seed}: test AUC {test['auc']:.4f} "
                    f"logloss {test['logloss']:.4f} ECE {test['ece']:.4f} base-rate "
                    f"{record['test_base_rate_logloss']:.4f}  epochs {record['epochs']} "
                    f"(best {record['best_epoch']}) {record['seconds']:.0f} s",
                    flush=True,
                )
                seeded_runs.append(args.out, record)


if __name__ == "__main__":
    main()
