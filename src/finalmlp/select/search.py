"""One OptFS search (gated training with a growing temperature), and the budget's bisection
of the sparsity penalty over several searches."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from finalmlp.data.dataset import PreparedData
from finalmlp.models import build_model
from finalmlp.schema import ExperimentConfig, SelectConfig
from finalmlp.select.gates import GatedModel, Gates
from finalmlp.train.records import Validation
from finalmlp.train.trainer import Trainer

Log = Callable[..., object]
# Where a budget's bisection starts when the config sets no sparsity: the paper's lambdas
# (1e-9 .. 1e-8) are for millions of values; on small vocabularies they keep everything.
BUDGET_START = 1e-4


@dataclass
class SearchResult:
    """What a search leaves: the binary gates, the weights to rewind to, and its log."""

    sparsity: float
    gates: Gates  # its mask holds the final (last-epoch) values
    rewind_state: dict[str, torch.Tensor]
    fraction: float  # of gates kept
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


def run_search(
    config: ExperimentConfig,
    data: PreparedData,
    select: SelectConfig,
    sparsity: float,
    device: torch.device,
    log: Log,
) -> SearchResult:
    """Train the config's model with gates for ``select.epochs`` epochs (no early stopping),
    the temperature growing from 1 to ``select.final_temperature``; keep the weights after
    ``select.rewind_epoch`` epochs."""
    started = time.perf_counter()
    layout = data.processor.layout
    torch.manual_seed(config.train.seed)
    base = build_model(layout, config.model, 1).to(device)
    gates = Gates(layout, select.level, select.mask_init, select.keep_fields).to(device)
    model = GatedModel(base, gates, sparsity)
    epochs = select.epochs
    train_config = config.train.model_copy(
        update={
            "max_epochs": epochs,
            "patience": epochs + 1,  # the search runs every epoch: no early stopping
            "reduce_lr_on_plateau": False,
            "eval_every_steps": None,
            "checkpoint_every_steps": None,
            "progress": False,
        }
    )
    state: dict[str, Any] = {"rewind": None, "mask": None}
    if select.rewind_epoch == 0:
        state["rewind"] = copy.deepcopy(base.state_dict())
    history: list[dict[str, Any]] = []

    def after_epoch(record: Validation) -> None:
        epoch = record.epoch
        kept = float(gates.kept().float().mean()) if gates.num_gates else 1.0
        history.append(
            {
                "epoch": epoch,
                "temperature": gates.temperature,
                "valid_auc": record.metrics.get("auc"),
                "valid_logloss": record.metrics.get("logloss"),
                "kept_fraction": kept,
            }
        )
        if epoch == select.rewind_epoch:
            state["rewind"] = copy.deepcopy(base.state_dict())
        if epoch == epochs:
            state["mask"] = gates.mask.detach().clone()
        # the next epoch's temperature: T ** (t / (S - 1)) for epoch t = 0 .. S-1
        gates.temperature = select.final_temperature ** (min(epoch, epochs - 1) / (epochs - 1))

    trainer = Trainer(model, train_config, on_validation=after_epoch, tasks=config.data.task_names)
    if select.mask_learning_rate is not None:
        _own_learning_rate(trainer, gates.mask, select.mask_learning_rate)
    trainer.fit(data.train, data.splits["valid"])  # restores the best weights: not wanted here
    gates.remove()
    assert state["mask"] is not None and state["rewind"] is not None
    with torch.no_grad():
        gates.mask.copy_(state["mask"])
    fraction = float(gates.kept().float().mean()) if gates.num_gates else 1.0
    seconds = time.perf_counter() - started
    last = history[-1]
    log(
        f"search: sparsity {sparsity:.3g}, {epochs} epochs in {seconds:.1f} s, "
        f"kept {fraction:.1%} of {gates.num_gates:,} {select.level} gates "
        f"(last epoch: valid AUC {last['valid_auc']:.4f}, temperature {last['temperature']:.3g})"
    )
    return SearchResult(sparsity, gates, state["rewind"], fraction, seconds, history)


def _own_learning_rate(trainer: Trainer, mask: torch.nn.Parameter, lr: float) -> None:
    """Give the masks a param group of their own with learning rate ``lr``."""
    optimizer = trainer.optimizer
    if not isinstance(optimizer, torch.optim.Optimizer):  # SparseDenseAdam: its dense half
        optimizer = optimizer.dense
    for group in optimizer.param_groups:
        group["params"] = [p for p in group["params"] if p is not mask]
    optimizer.add_param_group({"params": [mask], "lr": lr})


def search_with_budget(
    config: ExperimentConfig,
    data: PreparedData,
    select: SelectConfig,
    device: torch.device,
    log: Log,
) -> tuple[SearchResult, list[dict[str, float]]]:
    """Without a budget, one search at ``select.sparsity``. With ``select.keep_fraction``:
    searches at sparsities chosen by bisection on a log scale (bracketing by factors of 100
    from ``select.sparsity`` when the config sets it, else from BUDGET_START) until one keeps
    within ``budget_tolerance`` of the budget or ``budget_searches`` are spent; the closest
    search wins."""
    target = select.keep_fraction
    if target is None:
        result = run_search(config, data, select, select.sparsity, device, log)
        return result, [{"sparsity": result.sparsity, "fraction": result.fraction}]
    tried: list[SearchResult] = []
    low = high = None  # log10 sparsity keeping too much / too little
    start = select.sparsity if "sparsity" in select.model_fields_set else BUDGET_START
    guess = math.log10(max(start, 1e-12))
    for _ in range(select.budget_searches):
        result = run_search(config, data, select, 10.0**guess, device, log)
        tried.append(result)
        if abs(result.fraction - target) <= select.budget_tolerance:
            break
        if result.fraction > target:
            low = guess
            guess = guess + 2.0 if high is None else (guess + high) / 2
        else:
            high = guess
            guess = guess - 2.0 if low is None else (guess + low) / 2
    best = min(tried, key=lambda r: abs(r.fraction - target))
    log(
        f"budget: keep {target:.0%}; reached {best.fraction:.1%} at sparsity "
        f"{best.sparsity:.3g} after {len(tried)} searches"
    )
    return best, [{"sparsity": r.sparsity, "fraction": r.fraction} for r in tried]
