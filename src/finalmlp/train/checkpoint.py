"""Training checkpoints: atomic, hashed, and enough state to resume bit for bit.

A checkpoint holds the model, the optimizer (learning rate included), the best weights so far,
the early-stopping state, the history, the data position (epoch and batch within it) and the
RNG state. Files are written atomically (temp file, fsync, rename) into ``OUT/checkpoints/``,
with an index ``checkpoints.json`` of their sha256: a truncated or corrupted newest checkpoint
is detected on resume and the previous good one is used, with a warning. Loading uses
``torch.load(weights_only=True)``: tensors and plain containers only, no pickled objects.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from finalmlp.io import atomic_write_bytes, atomic_write_text

INDEX = "checkpoints.json"


@dataclass(frozen=True)
class Checkpoint:
    """Where training stood: ``batches_done`` batches of ``epoch`` (1-based) are done."""

    step: int
    epoch: int
    batches_done: int
    state: dict[str, Any]


class CheckpointStore:
    """The checkpoints of one run directory; keeps the newest ``keep`` of them."""

    def __init__(self, folder: Path, keep: int = 2) -> None:
        self.folder = Path(folder)
        self.keep = keep

    def save(self, checkpoint: Checkpoint) -> Path:
        buffer = io.BytesIO()
        torch.save(
            {
                "step": checkpoint.step,
                "epoch": checkpoint.epoch,
                "batches_done": checkpoint.batches_done,
                "state": checkpoint.state,
            },
            buffer,
        )
        data = buffer.getvalue()
        path = self.folder / f"step-{checkpoint.step:09d}.pt"
        atomic_write_bytes(path, data)
        entries = [e for e in self._index() if e["file"] != path.name]
        entries.append({"file": path.name, "step": checkpoint.step, "sha256": _sha256(data)})
        entries.sort(key=lambda e: e["step"])
        for old in entries[: -self.keep]:
            (self.folder / old["file"]).unlink(missing_ok=True)
        atomic_write_text(self.folder / INDEX, json.dumps(entries[-self.keep :], indent=1))
        return path

    def latest(self) -> Checkpoint | None:
        """The newest checkpoint whose bytes match their hash (older ones as fallback)."""
        for entry in reversed(self._index()):
            path = self.folder / str(entry["file"])
            data = path.read_bytes() if path.is_file() else b""
            if _sha256(data) != entry["sha256"]:
                warnings.warn(
                    f"checkpoint {path} is missing, truncated or corrupted (hash mismatch); "
                    "falling back to the previous one",
                    stacklevel=2,
                )
                continue
            raw = torch.load(io.BytesIO(data), weights_only=True)
            return Checkpoint(raw["step"], raw["epoch"], raw["batches_done"], raw["state"])
        return None

    def _index(self) -> list[dict[str, Any]]:
        path = self.folder / INDEX
        if not path.is_file():
            return []
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            warnings.warn(f"{path} is not valid JSON; ignoring these checkpoints", stacklevel=3)
            return []
        return list(entries) if isinstance(entries, list) else []


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
