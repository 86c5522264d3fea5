"""Defaults that fit the data (issue 16, point 2): inferred config + default training, and the
budgeted built-in search, against hand-tuned LR and DNN, on three real sets, 3 seeds.

Sets (files written under --work from ../shared/data, as a user's own CSVs would be):

- ``frappe_x1``: its train/valid/test CSVs as they are;
- ``criteo_small``: the first 8k Criteo rows, 7,200/409/391, headerless TSV;
- ``census``: UCI Census-Income (KDD) as a CSV with a header and a 0/1 ``income`` label
  (the instance weight and the other task's column dropped), seeded 80/10/10 files.

Arms, per seed (``train.seed``; the search's sampler seed too):

- ``inferred``: ``finalmlp.infer_config(train, valid=, test=)`` trained as proposed;
- ``tune``: ``finalmlp tune`` on that config with ``--budget`` (the run it hands back);
- ``lr_tuned`` / ``dnn_tuned``: hand-tuned LR and DNN: frappe_x1's BARS configs
  (configs/frappe_x1_lr.yaml, frappe_x1_dnn.yaml); for the other sets the best of a small grid
  on validation AUC (seed 2021; LR: learning rate 1e-2, 3e-2, 1e-1; DNN: learning rate 1e-3,
  3e-3 x embedding L2 1e-5, 1e-2), batch size as the inferred config's.

Usage:
    nice -n 10 flock /tmp/bench.lock .venv/bin/python benchmarks/bench_defaults.py \
        --sets criteo_small,census --budget 2m --out docs/results/defaults.jsonl
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import seeded_runs
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "src"))


def make_files(work: Path) -> dict[str, dict[str, Path]]:
    files: dict[str, dict[str, Path]] = {}
    frappe = SHARED / "frappe_x1"
    files["frappe_x1"] = {s: frappe / f"{s}.csv" for s in ("train", "valid", "test")}
    criteo = SHARED / "criteo_small"
    files["criteo_small"] = {
        "train": criteo / "train.csv",
        "valid": criteo / "dev.csv",
        "test": criteo / "test.csv",
    }
    census = work / "census"
    census.mkdir(parents=True, exist_ok=True)
    files["census"] = {s: census / f"{s}.csv" for s in ("train", "valid", "test")}
    if not files["census"]["test"].is_file():
        from finalmlp.data.recipes import CENSUS_COLUMNS

        frame = pl.read_csv(
            SHARED / "census_income_kdd" / "census-income.test.gz",
            has_header=False,
            new_columns=list(CENSUS_COLUMNS),
            infer_schema=False,
        ).with_columns(pl.all().str.strip_chars())
        frame = frame.with_columns((pl.col("income") == "50000+.").cast(pl.Int8))
        frame = frame.drop("instance_weight", "marital_stat").select("income", pl.exclude("income"))
        order = np.random.default_rng(16).permutation(frame.height)
        n = frame.height
        parts = {"train": order[: n * 8 // 10], "valid": order[n * 8 // 10 : n * 9 // 10]}
        parts["test"] = order[n * 9 // 10 :]
        for split, rows in parts.items():
            frame[np.sort(rows)].write_csv(files["census"][split])
    return files


def inferred_config(files: dict[str, Path], cache: Path) -> dict[str, Any]:
    import finalmlp

    label = "income" if "census" in str(files["train"]) else None
    config = finalmlp.infer_config(
        files["train"], label=label, valid=files["valid"], test=files["test"]
    )
    config["data"]["cache_dir"] = str(cache)
    return config


def hand_tuned(name: str, model: str, inferred: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """The candidate configs of the hand-tuned arm (one for frappe_x1: BARS's)."""
    if name == "frappe_x1":
        raw = yaml.safe_load((ROOT / "configs" / f"frappe_x1_{model}.yaml").read_text())
        data = dict(inferred["data"])
        return [{"data": data, "model": raw["model"], "train": {**raw["train"], "seed": seed}}]
    batch = inferred["train"]["batch_size"]
    if model == "lr":
        grid = [{"learning_rate": lr, "embedding_l2": 0.0} for lr in (1e-2, 3e-2, 1e-1)]
    else:
        grid = [
            {"learning_rate": lr, "embedding_l2": l2} for lr in (1e-3, 3e-3) for l2 in (1e-5, 1e-2)
        ]
    return [
        {
            "data": inferred["data"],
            "model": {"name": model},
            "train": {**point, "batch_size": batch, "seed": seed},
        }
        for point in grid
    ]


def train(config: dict[str, Any], out: Path) -> dict[str, Any]:
    import shutil

    import finalmlp

    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = finalmlp.train(config, out=out)
    return summary(run.metrics, time.perf_counter() - started, run.config.model.name)


def summary(metrics: dict[str, Any], seconds: float, model: str) -> dict[str, Any]:
    calibrated = metrics.get("calibration", {}).get("test", {})
    return {
        "model": model,
        "valid_auc": metrics["valid"]["auc"],
        "test_auc": metrics["test"]["auc"],
        "test_logloss": calibrated.get("logloss_after", metrics["test"]["logloss"]),
        "epochs": metrics["epochs"],
        "seconds": seconds,
    }


def table(path: Path) -> str:
    """Markdown: per set and arm, mean ± std over seeds, and the models the arm ended with."""
    groups = seeded_runs.grouped(path, "arm")
    rows = [
        "| set | arm | seeds | model(s) | test AUC | test logloss | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for (name, arm), records in groups.items():
        cells = [
            seeded_runs.mean_std([r[k] for r in records]) for k in ("test_auc", "test_logloss")
        ]
        models = ", ".join(sorted({r["model"] for r in records}))
        seconds = np.mean([r["seconds"] for r in records])
        rows.append(
            f"| {name} | {arm} | {len(records)} | {models} | {' | '.join(cells)} | {seconds:.0f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = seeded_runs.parser(
        __doc__,
        sets="frappe_x1,criteo_small,census",
        seeds="2021,2022,2023",
        work=Path("/tmp/bench_defaults"),
        out=ROOT / "docs/results/defaults.jsonl",
    )
    parser.add_argument("--arms", default="inferred,tune,lr_tuned,dnn_tuned")
    parser.add_argument("--budget", default="2m")
    args = parser.parse_args()
    if args.table:
        print(table(args.out))
        return
    from finalmlp.tune.auto import auto_tune, parse_budget

    files = make_files(args.work)
    for name in args.sets.split(","):
        for seed in seeded_runs.seeds(args.seeds):
            base = inferred_config(files[name], args.work / "cache")
            base["train"]["seed"] = seed
            for arm in args.arms.split(","):
                out = args.work / "runs" / f"{name}-{arm}-{seed}"
                record: dict[str, Any] = {"set": name, "arm": arm, "seed": seed}
                if arm == "inferred":
                    record.update(train(base, out))
                elif arm == "tune":
                    config_file = args.work / f"{name}-{seed}.yaml"
                    config_file.write_text(yaml.safe_dump(base), encoding="utf-8")
                    started = time.perf_counter()
                    result = auto_tune(
                        config_file, out, parse_budget(args.budget), seed=seed, log=lambda _: None
                    )
                    assert result.best is not None, f"{name}: no trial finished"
                    metrics = json.loads((result.best_run / "metrics.json").read_text())
                    record.update(
                        summary(metrics, time.perf_counter() - started, result.best["model"])
                    )
                    record["trials"] = len(result.trials)
                else:
                    model = arm.split("_")[0]
                    candidates = hand_tuned(name, model, base, seed)
                    if len(candidates) > 1:  # the grid point chosen on seed 2021, kept for all
                        chosen = args.work / f"{name}-{model}-choice.json"
                        if not chosen.is_file():
                            scores = [
                                train({**c, "train": {**c["train"], "seed": 2021}}, out)[
                                    "valid_auc"
                                ]
                                for c in candidates
                            ]
                            chosen.write_text(json.dumps(int(np.argmax(scores))))
                        candidates = [candidates[json.loads(chosen.read_text())]]
                    record.update(train(candidates[0], out))
                    record["train"] = {
                        k: candidates[0]["train"][k]
                        for k in ("learning_rate", "embedding_l2")
                        if k in candidates[0]["train"]
                    }
                print(
                    f"{name:<13} {arm:<10} seed {seed}: {record['model']:<8} test AUC "
                    f"{record['test_auc']:.4f} logloss {record['test_logloss']:.4f} "
                    f"({record['seconds']:.0f} s)",
                    flush=True,
                )
                seeded_runs.append(args.out, record)


if __name__ == "__main__":
    main()
