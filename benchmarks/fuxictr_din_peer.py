"""FuxiCTR 2.3.10's side of bench_din_vs_fuxictr.py: DIN preprocessing and training, one JSON
line out.

Runs inside ``benchmarks/.fuxictr-venv`` (``benchmarks/fuxictr_env.sh``). The wheel ships
FuxiCTR's layers (``FeatureEmbeddingDict``, ``DIN_Attention``, ``MLP_Block``, ``Dice``),
``BaseModel`` and data pipeline but not its model zoo, so DIN is assembled here from those
parts as the public model-zoo definition (``model_zoo/DIN/src/DIN.py``) does: every field
embedded by ``FeatureEmbeddingDict`` (a sequence field without a ``feature_encoder`` stays
(B, L, E); the other sequence fields are mean-pooled by FuxiCTR's default
``MaskedAveragePooling``), one ``DIN_Attention`` per (target, sequence) pair with the mask
``sequence != 0`` (padding index 0), the pooled vector put in place of the sequence's
embedding, all fields flattened into an ``MLP_Block`` with a sigmoid output, and
``BaseModel``'s loss, regularizer and ``train_step`` (clipping at 10, Adam).

The stages:

- preprocess: ``FeatureProcessor`` + ``build_dataset`` from the driver's CSVs (train, valid,
  test), whose history columns hold the item ids and genre strings of our builder's histories
  joined with ``^``: Polars reads them, the processor fits the vocabularies (histories share
  the candidate's), and Ray Data encodes every split (``Tokenizer.encode_sequence``: split,
  look up, pad to ``max_len``) into Parquet; Ray starts here with ``--threads`` CPUs;
- train: ``BaseModel.train_step`` over FuxiCTR's shuffled Parquet loader (Ray Data) for
  ``--steps`` batches (0: one epoch); samples/s over the loop (the loader is built first);
- train_in_memory: the same steps over batches sliced from the training Parquet read into
  tensors and shuffled once (no loader in the loop: a lower bound for FuxiCTR's step cost).

Usage (normally through the driver):
    benchmarks/.fuxictr-venv/bin/python benchmarks/fuxictr_din_peer.py --data DIR \
        --settings settings.json --steps 0 --threads 2 --workdir /tmp/fx
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import ray
import torch
from fuxictr.features import FeatureMap
from fuxictr.preprocess import FeatureProcessor, build_dataset
from fuxictr.pytorch.dataloaders import RankDataLoader
from fuxictr.pytorch.layers import DIN_Attention, FeatureEmbeddingDict, MLP_Block
from fuxictr.pytorch.models import BaseModel
from fuxictr.pytorch.torch_utils import seed_everything

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vs_fuxictr_common import PeakMemory, count_csv_rows, rate, split_paths, write_result

Inputs = dict[str, torch.Tensor]


class FuxiDIN(BaseModel):
    """FuxiCTR's DIN (model zoo), built on FuxiCTR's parts; one attention per pair."""

    def __init__(self, feature_map: FeatureMap, settings: dict[str, Any], root: str) -> None:
        super().__init__(
            feature_map, model_id="DIN", gpu=-1, model_root=root, verbose=0,
            embedding_regularizer=settings["embedding_l2"] or None, net_regularizer=None,
            metrics=["logloss", "AUC"],
        )  # fmt: skip
        dim = settings["embedding_dim"]
        self.pairs = list(zip(settings["targets"], settings["sequences"], strict=True))
        self.embedding_layer = FeatureEmbeddingDict(feature_map, dim)
        self.attention_layers = torch.nn.ModuleList(
            DIN_Attention(
                dim,
                attention_units=settings["attention_hidden_units"],
                hidden_activations=settings["attention_activation"],
                output_activation=None,
                dropout_rate=0,
                use_softmax=settings["softmax"],
            )
            for _ in self.pairs
        )
        self.dnn = MLP_Block(
            input_dim=feature_map.sum_emb_out_dim(),
            output_dim=1,
            hidden_units=settings["dnn_hidden_units"],
            hidden_activations=settings["dnn_activation"],
            output_activation=self.output_activation,
            dropout_rates=0,
            batch_norm=False,
        )
        self.compile("adam", "binary_crossentropy", settings["learning_rate"])
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs: Inputs) -> Inputs:
        X = self.get_inputs(inputs)
        embeddings = self.embedding_layer(X)
        for attention, (target, sequence) in zip(self.attention_layers, self.pairs, strict=True):
            mask = X[sequence].long() != 0  # padding index 0
            embeddings[sequence] = attention(embeddings[target], embeddings[sequence], mask)
        flat = self.embedding_layer.dict2tensor(embeddings, flatten_emb=True)
        return {"y_pred": self.dnn(flat)}


def feature_cols(settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Feature columns of the driver's CSVs, as a FuxiCTR dataset config lists them."""
    cols: list[dict[str, Any]] = [
        {"name": name, "active": True, "dtype": "str", "type": "categorical"}
        for name in settings["categorical"]
    ]
    for spec in settings["sequence_columns"]:
        col = {"name": spec["name"], "active": True, "dtype": "str", "type": "sequence",
               "splitter": spec["splitter"], "max_len": spec["max_len"]}  # fmt: skip
        if spec.get("share_embedding"):
            col["share_embedding"] = spec["share_embedding"]
        if spec.get("attention"):
            col["feature_encoder"] = None  # DIN pools it; (B, L, E) out of the embedding
        cols.append(col)
    return cols


def preprocess(settings: dict[str, Any], paths: dict[str, Path], root: Path) -> tuple:
    encoder = FeatureProcessor(
        feature_cols=feature_cols(settings),
        label_col={"name": "label", "dtype": "float"},
        dataset_id="movielens_din",
        data_root=str(root),
    )
    train, valid, test = build_dataset(
        encoder, train_data=str(paths["train"]), valid_data=str(paths["valid"]),
        test_data=str(paths["test"]), data_format="csv",
    )  # fmt: skip
    fmap = FeatureMap("movielens_din", str(root / "movielens_din"))
    fmap.load(str(root / "movielens_din" / "feature_map.json"), settings)
    return fmap, {"train": train, "valid": valid, "test": test}


def timed(model: FuxiDIN, batches: Any, steps: int, total: int) -> dict[str, Any]:
    """``steps`` (0: ``total``, one epoch) of BaseModel.train_step, timed."""
    wanted = total if steps == 0 else min(steps, total)
    model._max_gradient_norm = 10.0  # what BaseModel.fit sets before its epochs
    model.train()
    samples, loss, done = 0, float("nan"), 0
    started = time.perf_counter()
    for step, batch in enumerate(batches, start=1):
        loss = model.train_step(batch).item()
        samples += int(batch["label"].shape[0])
        done = step
        if step == wanted:
            break
    seconds = time.perf_counter() - started
    return {"steps": done, "samples": samples, "seconds": round(seconds, 3),
            "samples_per_s": rate(samples, seconds), "last_loss": loss}  # fmt: skip


def in_memory(parquet: str, batch_size: int, seed: int) -> list[Inputs]:
    """The training Parquet as tensors, shuffled once, sliced into batches."""
    table = pl.read_parquet(parquet).drop("row_index", strict=False)
    order = np.random.default_rng(seed).permutation(table.height)
    columns = {}
    for name in table.columns:
        values = table[name]
        array = np.stack(values.to_numpy()) if values.dtype.is_nested() else values.to_numpy()
        columns[name] = torch.from_numpy(np.ascontiguousarray(array[order]))
    return [
        {name: tensor[start : start + batch_size] for name, tensor in columns.items()}
        for start in range(0, table.height, batch_size)
    ]


def history_bytes(parquet: dict[str, str], sequences: list[str]) -> dict[str, Any]:
    """Bytes of the encoded histories: the splits' Parquet files on disk, and the padded
    (N, max_len) arrays in memory as the loader hands them to the model."""
    memory = 0
    rows = 0
    for path in parquet.values():
        table = pl.read_parquet(path, columns=sequences)
        rows += table.height
        memory += sum(np.stack(table[name].to_numpy()).nbytes for name in sequences)
    disk = sum(Path(p).stat().st_size for p in parquet.values())
    return {"rows": rows, "padded_in_memory": memory, "parquet_all_columns_on_disk": disk,
            "per_row_in_memory": round(memory / rows, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of train/valid/test.csv")
    parser.add_argument("--settings", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=0, help="training steps; 0: one epoch")
    parser.add_argument("--workdir", type=Path, help="FuxiCTR's data_root/model_root (fresh)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = json.loads(args.settings.read_text())
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fuxictr-din-"))
    paths = split_paths(args.data)
    rows = sum(count_csv_rows(p) for p in paths.values())
    seed_everything(settings["seed"])

    with PeakMemory() as memory:
        tick = time.perf_counter()
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=args.threads, include_dashboard=False, ignore_reinit_error=True,
                 logging_level=logging.ERROR, log_to_driver=False)  # fmt: skip
        ray.data.DataContext.get_current().enable_progress_bars = False
        fmap, parquet = preprocess(settings, paths, workdir / "data")
        seconds = time.perf_counter() - tick
    prep = {"rows": rows, "seconds": round(seconds, 3), "rows_per_s": rate(rows, seconds)}
    prep.update(memory.report())

    model = FuxiDIN(fmap, settings, str(workdir / "models"))
    loader, _ = RankDataLoader(
        fmap, stage="train", train_data=parquet["train"], batch_size=settings["batch_size"],
        shuffle=True, data_format="csv",
    )  # fmt: skip
    with PeakMemory() as memory:
        train = timed(model, iter(loader), args.steps, len(loader))
    train.update(memory.report())

    seed_everything(settings["seed"])
    model = FuxiDIN(fmap, settings, str(workdir / "models"))
    batches = in_memory(parquet["train"], settings["batch_size"], settings["seed"])
    with PeakMemory() as memory:
        train_in_memory = timed(model, batches, args.steps, len(batches))
    train_in_memory.update(memory.report())
    sequences = [s["name"] for s in settings["sequence_columns"] if s.get("attention")]
    result = {
        "impl": "fuxictr",
        "versions": {n: metadata.version(n) for n in ("fuxictr", "torch", "polars", "ray")},
        "threads": args.threads,
        "torch_threads": torch.get_num_threads(),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "preprocess": prep,
        "train": train,
        "train_in_memory": train_in_memory,
        "history_bytes": history_bytes(parquet, sequences),
    }
    ray.shutdown()
    write_result(result, args.out)


if __name__ == "__main__":
    main()
