"""Per-task test table of `finalmlp bench` runs: AUC, logloss, ECE and the base-rate logloss,
and the expert-collapse figures of mixture-of-experts models.

`finalmlp bench` writes AUC and logloss per task; this adds what its leaderboard does not
hold: ECE (served probabilities, 15 equal-width bins) and the logloss of the constant
predictor at the test split's own positive rate, so every model's logloss stands against
the base rate. For MMoE/PLE/HoME it also gives, on the test split, each task's effective
number of experts (exp of the entropy of its mean gate weights at its direct level), the
largest mean gate weight, and the experts' dead fraction (outputs exactly 0).

Also the single-task tables of docs/sequences.md (``--names`` labels each runs folder).

Usage (after the benches of docs/multitask.md):
    .venv/bin/python benchmarks/multitask_table.py \
        /tmp/census_runs/mt /tmp/census_runs/income /tmp/census_runs/nm \
        --out docs/results/census_multitask/per_task.json
Each RUNS folder holds MODEL/seedN run directories (`finalmlp bench --runs`).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from finalmlp.bundle import load_run
from finalmlp.inference import predict_proba
from finalmlp.metrics import expected_calibration_error, log_loss, roc_auc
from finalmlp.report.build import expert_summary, load_splits, served_probs


def base_logloss(labels: np.ndarray) -> float:
    rate = float(labels.mean())
    return -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))


def expert_figures(summary: dict[str, Any], tasks: list[str]) -> dict[str, Any]:
    """Per task: effective experts and largest mean gate weight at the task's deepest level."""
    levels = np.asarray(summary["levels"])
    weights = np.asarray(summary["gate_weights"])  # [task][expert]
    figures: dict[str, Any] = {
        "dead_fraction_mean": float(np.mean(summary["dead_fraction"])),
        "dead_fraction_max": float(np.max(summary["dead_fraction"])),
        "experts": len(levels),
    }
    for index, task in enumerate(tasks):
        row = weights[index][levels == levels.max()]
        row = row[row > 0]  # the hierarchy mask: experts the task's gate does not see
        row = row / row.sum()
        entropy = -float(np.sum(row * np.log(row)))
        figures[f"{task}.effective_experts"] = math.exp(entropy)
        figures[f"{task}.gated_experts"] = int(row.size)
        figures[f"{task}.max_gate"] = float(row.max())
    return figures


def evaluate(run_dir: Path) -> dict[str, Any]:
    run = load_run(run_dir)
    test = load_splits(run)["test"]
    labels = np.asarray(test.label)
    probs, _ = served_probs(run, predict_proba(run.model, test, run.config.train.eval_batch_size))
    out: dict[str, Any] = {"model": run.config.model.name, "seed": run.config.train.seed}
    for index, task in enumerate(run.tasks):
        keep = ~np.isnan(labels[:, index])
        y, p = labels[keep, index], probs[keep, index]
        out[task] = {
            "auc": roc_auc(y, p),
            "logloss": log_loss(y, p),
            "ece": expected_calibration_error(y, p),
            "base_logloss": base_logloss(y),
            "positive_rate": float(y.mean()),
            "rows": int(y.size),
        }
    summary = expert_summary(run, test, run.config.train.eval_batch_size)
    if summary is not None:
        out["experts"] = expert_figures(summary, run.tasks)
    return out


def mean_std(values: list[float], digits: int = 4) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"


def tables(results: list[dict[str, Any]], label: dict[str, str]) -> str:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for result in results:
        groups.setdefault((result["setting"], result["model"]), []).append(result)
    tasks = sorted({k for r in results for k in r if isinstance(r[k], dict) and "auc" in r[k]})
    lines = []
    for task in tasks:
        first = next(r[task] for r in results if task in r)
        lines += [
            f"\n**{task}** (test rows {first['rows']}, positive rate "
            f"{first['positive_rate']:.3f}, base-rate logloss {first['base_logloss']:.4f})\n",
            "| model | trained on | test AUC | test logloss | test ECE | seeds |",
            "|---|---|---|---|---|---|",
        ]
        rows = []
        for (setting, model), runs in groups.items():
            if task not in runs[0]:
                continue
            aucs = [r[task]["auc"] for r in runs]
            rows.append(
                (
                    -statistics.mean(aucs),
                    f"| {model} | {label[setting]} | {mean_std(aucs)} | "
                    f"{mean_std([r[task]['logloss'] for r in runs])} | "
                    f"{mean_std([r[task]['ece'] for r in runs])} | {len(runs)} |",
                )
            )
        lines += [row for _, row in sorted(rows)]
    experts = [(k, v) for k, v in groups.items() if "experts" in v[0]]
    if experts:
        lines += [
            "\n**Experts** (test split; effective experts = exp(entropy of the task's mean gate "
            "weights over the experts its gate sees))\n",
            "| model | experts | "
            + " | ".join(f"{t} effective / max gate" for t in tasks)
            + " | dead fraction mean / max |",
            "|---|---|" + "---|" * len(tasks) + "---|",
        ]
        for (_, model), runs in experts:
            cells = []
            for task in tasks:
                effective = [r["experts"][f"{task}.effective_experts"] for r in runs]
                gated = runs[0]["experts"][f"{task}.gated_experts"]
                top = [r["experts"][f"{task}.max_gate"] for r in runs]
                cells.append(f"{statistics.mean(effective):.2f} of {gated} / "
                             f"{statistics.mean(top):.2f}")  # fmt: skip
            dead = [r["experts"]["dead_fraction_mean"] for r in runs]
            worst = [r["experts"]["dead_fraction_max"] for r in runs]
            lines.append(
                f"| {model} | {runs[0]['experts']['experts']} | "
                + " | ".join(cells)
                + f" | {statistics.mean(dead):.3f} / {max(worst):.3f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="bench --runs folders")
    parser.add_argument("--out", type=Path, required=True, help="JSON results; .md beside it")
    parser.add_argument(
        "--names",
        nargs="*",
        default=[],
        help="FOLDER=TEXT: the 'trained on' text of a runs folder (default: its tasks), "
        "e.g. att='attention pooling'",
    )
    args = parser.parse_args()
    names = dict(item.split("=", 1) for item in args.names)
    results, label = [], {}
    for folder in args.runs:
        label[folder.name] = folder.name
        for run_dir in sorted(folder.glob("*/seed*")):
            if (run_dir / "model.safetensors").is_file():
                result = {**evaluate(run_dir), "setting": folder.name}
                tasks = [k for k, v in result.items() if isinstance(v, dict) and "auc" in v]
                label[folder.name] = names.get(
                    folder.name, "both tasks" if len(tasks) > 1 else f"{tasks[0]} alone"
                )
                results.append(result)
                print(run_dir, {t: round(result[t]["auc"], 4) for t in tasks}, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    table = tables(results, label)
    args.out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
