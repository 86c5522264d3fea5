"""FuxiCTR 2.3.10's side of bench_mmoe_vs_fuxictr.py: MMoE training steps, one JSON line out.

Runs inside the FuxiCTR virtual environment (``benchmarks/fuxictr_env.sh``). The wheel ships
FuxiCTR's layers and ``MultiTaskModel`` but not its model zoo, so MMoE is assembled here from
FuxiCTR's own parts as its public model-zoo definition (``model_zoo/multitask/MMoE``) does:
``FeatureEmbedding`` over every field, one ``MLP_Block`` per expert on the flat embedding,
one ``MLP_Block`` gate per task followed by a softmax, the experts' outputs weighted and
summed per task, one ``MLP_Block`` tower per task, a sigmoid output per task, and
``MultiTaskModel``'s loss (binary cross-entropy per task, summed), embedding regularizer and
``train_step`` (clipping at 10, Adam).

The encoded rows come from the driver (an ``.npz`` of the same ids and values our side
trains on); batches are sliced from in-memory tensors after one shuffle, so FuxiCTR's Ray
data loader is not in the timed loop (a lower bound on its cost per step).

Usage (normally through the driver):
    /path/to/fuxictr-venv/bin/python benchmarks/fuxictr_mmoe_peer.py --data rows.npz \
        --settings settings.json --steps 300 --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fuxictr.features import FeatureMap
from fuxictr.pytorch.layers import FeatureEmbedding, MLP_Block
from fuxictr.pytorch.models import MultiTaskModel
from torch import nn


class FuxiMMoE(MultiTaskModel):
    """FuxiCTR's MMoE (model zoo), built on FuxiCTR's parts."""

    def __init__(self, feature_map: FeatureMap, settings: dict[str, Any], **kwargs: Any) -> None:
        num_tasks = len(feature_map.labels)
        super().__init__(
            feature_map,
            task=["binary_classification"] * num_tasks,
            num_tasks=num_tasks,
            model_id="MMoE",
            embedding_regularizer=settings["embedding_l2"],
            net_regularizer=0,
            **kwargs,
        )
        dim = settings["embedding_dim"]
        flat_dim = dim * feature_map.num_fields
        self.embedding_layer = FeatureEmbedding(feature_map, dim)

        def block(
            input_dim: int, hidden: list[int], output_dim: int | None = None, norm: bool = False
        ) -> nn.Module:
            return MLP_Block(
                input_dim=input_dim,
                hidden_units=hidden,
                output_dim=output_dim,
                hidden_activations="ReLU",
                output_activation=None,
                dropout_rates=0,
                batch_norm=norm,
            )

        experts = settings["expert_hidden_units"]
        self.experts = nn.ModuleList(
            block(flat_dim, experts, norm=settings.get("expert_batch_norm", False))
            for _ in range(settings["num_experts"])
        )
        self.gates = nn.ModuleList(
            block(flat_dim, settings["gate_hidden_units"], settings["num_experts"])
            for _ in range(num_tasks)
        )
        self.towers = nn.ModuleList(
            block(experts[-1], settings["tower_hidden_units"], 1) for _ in range(num_tasks)
        )
        self.compile("adam", "binary_crossentropy", settings["learning_rate"])
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        flat = self.embedding_layer(self.get_inputs(inputs)).flatten(start_dim=1)
        outputs = torch.stack([expert(flat) for expert in self.experts], dim=1)  # (B, N, H)
        result = {}
        for i, label in enumerate(self.feature_map.labels):
            weights = torch.softmax(self.gates[i](flat), dim=-1).unsqueeze(-1)  # (B, N, 1)
            mixed = (weights * outputs).sum(dim=1)
            result[f"{label}_pred"] = self.output_activation[i](self.towers[i](mixed))
        return result


def feature_map(data: dict[str, np.ndarray], workdir: str) -> FeatureMap:
    fmap = FeatureMap("census_bench", workdir)
    for i, size in enumerate(data["table_sizes"].tolist()):
        fmap.features[f"c{i}"] = {"type": "categorical", "vocab_size": int(size),
                                  "padding_idx": 0, "source": ""}  # fmt: skip
    for i in range(data["numeric"].shape[1]):
        fmap.features[f"n{i}"] = {"type": "numeric", "source": ""}
    fmap.labels = [f"task{t}" for t in range(data["label"].shape[1])]
    fmap.num_fields = fmap.get_num_fields()
    return fmap


def batches(data: dict[str, np.ndarray], batch_size: int, labels: list[str]) -> list[dict]:
    order = np.random.default_rng(0).permutation(len(data["label"]))
    cat = torch.from_numpy(data["categorical"][order].astype(np.int64))
    num = torch.from_numpy(data["numeric"][order])
    lab = torch.from_numpy(data["label"][order])
    out = []
    for start in range(0, len(order) - batch_size + 1, batch_size):
        rows = slice(start, start + batch_size)
        item = {f"c{i}": cat[rows, i] for i in range(cat.shape[1])}
        item.update({f"n{i}": num[rows, i] for i in range(num.shape[1])})
        item.update({name: lab[rows, t] for t, name in enumerate(labels)})
        out.append(item)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--settings", required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = json.loads(Path(args.settings).read_text())
    data = dict(np.load(args.data))
    torch.manual_seed(settings["seed"])
    with tempfile.TemporaryDirectory() as workdir:
        fmap = feature_map(data, workdir)
        model = FuxiMMoE(fmap, settings, gpu=-1, verbose=0, model_root=workdir,
                         metrics=["logloss", "AUC"])  # fmt: skip
        model._max_gradient_norm = 10.0  # what fit() sets before its train_step calls
        model.train()
        loader = batches(data, settings["batch_size"], fmap.labels)
        warmup = 20
        for batch in loader[:warmup]:
            model.train_step(batch)
        started = time.perf_counter()
        steps, loss = 0, 0.0
        while steps < args.steps:
            for batch in loader[warmup:]:
                loss = float(model.train_step(batch))
                steps += 1
                if steps == args.steps:
                    break
        seconds = time.perf_counter() - started
    result = {
        "impl": "fuxictr",
        "steps": steps,
        "samples_per_s": steps * settings["batch_size"] / seconds,
        "seconds": seconds,
        "last_loss": loss,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
