"""Small run directories for the ONNX and batch-scoring tests, made in code in a second.

The rows hold every input kind: categorical (``user``, ``item``), numeric (``price``), a
bucketized numeric (``age``) and two sequences (``history``, ``tags``, sharing ``item``'s
table). The model is not trained: its embeddings, biases and BatchNorm statistics are drawn with a
spread (Linear weights keep their xavier init), so scores vary widely between rows and a wrong
input, column or row order shows up as a large difference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from finalmlp.bundle import save_run
from finalmlp.config import parse_config
from finalmlp.features.processor import FeatureProcessor
from finalmlp.models import build_model

FEATURES: list[dict[str, Any]] = [
    {"name": "user", "type": "categorical"},
    {"name": "item", "type": "categorical"},
    {"name": "price", "type": "numeric"},
    {"name": "age", "type": "numeric", "bucketize": "quantile", "num_buckets": 4},
    {"name": "history", "type": "sequence", "max_len": 4},
    {"name": "tags", "type": "sequence", "separator": "|", "max_len": 3, "share_embedding": "item"},
]
FINALMLP: dict[str, Any] = {
    "name": "finalmlp",
    "embedding_dim": 4,
    "mlp1": {"hidden_units": [16], "batch_norm": True},
    "mlp2": {"hidden_units": [8], "batch_norm": True},
    "fs_hidden_units": [8],
    "fs1_context": ["user", "price"],
    "fs2_context": ["history"],
    "num_heads": 2,
}


def rows(num_rows: int, seed: int = 0) -> pl.DataFrame:
    """Raw rows as text, as a CSV holds them (ids with leading zeros, blanks, OOV values)."""
    rng = np.random.default_rng(seed)
    users = [f"u{i:03d}" for i in rng.integers(0, 12, num_rows)]
    items = [str(i).zfill(3) for i in rng.integers(0, 9, num_rows)]
    price = [f"{x:.3f}" for x in rng.normal(3.0, 2.0, num_rows)]
    price[1] = ""  # missing: the fill value
    age = [str(a) for a in rng.integers(15, 70, num_rows)]
    history = ["^".join(f"h{j}" for j in rng.integers(0, 15, rng.integers(0, 6))) for _ in users]
    tags = ["|".join(str(j).zfill(3) for j in rng.integers(0, 12, 2)) for _ in users]
    label = rng.integers(0, 2, num_rows).astype(str)
    columns = {"label": label, "user": users, "item": items, "price": price, "age": age}
    return pl.DataFrame({**columns, "history": history, "tags": tags})


def make_run(
    folder: Path,
    model: dict[str, Any] | None = None,
    features: list[dict[str, Any]] | None = None,
    seed: int = 0,
    labels: list[str] | None = None,
    **data: Any,
) -> Path:
    """Fit the processor on 200 rows, draw weights, save the run directory ``folder/run``.

    ``labels`` names several tasks (``data.labels``): each gets a random 0/1 column.
    """
    folder.mkdir(parents=True, exist_ok=True)
    train = folder / "train.csv"
    frame = rows(200, seed)
    if labels is not None:
        rng = np.random.default_rng(seed + 1)
        frame = frame.with_columns(
            pl.Series(name, rng.integers(0, 2, frame.height).astype(str)) for name in labels
        )
        data = {**data, "labels": labels}
    frame.write_csv(train)
    config = parse_config(
        {
            "data": {"train": str(train), "features": features or FEATURES, **data},
            "model": model or FINALMLP,
            "train": {"progress": False},
        }
    )
    frame = pl.read_csv(train, infer_schema=False)  # numeric text is parsed by the processor
    processor = FeatureProcessor(config.data.features).fit(frame)
    # the Linear layers' xavier draws: the same run whatever ran before
    torch.manual_seed(2023 + seed)
    net = build_model(processor.layout, config.model, len(config.data.tasks))
    generator = torch.Generator().manual_seed(seed)
    keep = {id(m.weight) for m in net.modules() if isinstance(m, torch.nn.Linear)}  # xavier
    with torch.no_grad():
        for param in net.parameters():
            if id(param) not in keep:  # embeddings start near 0, biases at 0: spread them
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
        for name, buffer in net.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=generator) * 0.2)
            elif name.endswith("running_var"):
                buffer.copy_(torch.rand(buffer.shape, generator=generator) + 0.5)
    net.eval()
    save_run(folder / "run", config, processor, net, {})
    return folder / "run"
