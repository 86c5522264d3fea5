"""ONNX export covers attention pooling (DIN and an attention-pooled FinalMLP field): the
exporter's own check scores sample rows with ONNX Runtime and PyTorch and compares them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from serve_runs import FEATURES, FINALMLP, make_run

from finalmlp.serve.onnx import export_onnx

ATTENTION_FEATURES = [
    f if f["name"] != "tags" else {**f, "pooling": "attention", "target": "item",
                                    "attention": {"hidden_units": [8]}}
    for f in FEATURES
]  # fmt: skip
DIN: dict[str, Any] = {"name": "din", "embedding_dim": 4, "mlp": {"hidden_units": [8]}}


@pytest.mark.parametrize("model", [DIN, FINALMLP], ids=["din", "finalmlp"])
def test_attention_pooling_exports_and_matches_pytorch(
    model: dict[str, Any], tmp_path: Path
) -> None:
    run_dir = make_run(tmp_path, model=model, features=ATTENTION_FEATURES)
    result = export_onnx(run_dir)
    assert result.max_abs_diff < 1e-5
