"""ONNX export: ONNX Runtime scores equal PyTorch's (1e-5) for every input kind and model, on
real Frappe rows too; the export is tied to its run (a stale or edited graph is refused)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from serve_runs import FINALMLP, make_run, rows
from typer.testing import CliRunner

import finalmlp.serve.onnx as onnx_module
from finalmlp.bundle import load_run
from finalmlp.cli.main import USER_ERROR_EXIT, app
from finalmlp.config import parse_config
from finalmlp.errors import DataError
from finalmlp.inference import predict_proba
from finalmlp.predict import read_for_run
from finalmlp.serve.onnx import (
    ExportError,
    OnnxModel,
    export_onnx,
    export_problem,
    file_sha256,
)
from finalmlp.train.run import train_from_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _parity(run_dir: Path, data: Path, batch_size: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    run = load_run(run_dir)
    split = read_for_run(run, data, require_label=False)
    expected = predict_proba(run.model, split, 16384)
    return OnnxModel.from_run(run_dir, intra_op_threads=1).predict(split, batch_size), expected


@pytest.fixture(scope="module")
def frappe_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FinalMLP with the paper's Frappe settings, one epoch on 20k train rows."""
    from conftest import SHARED_DATA

    folder = SHARED_DATA / "frappe_x1"
    if not folder.is_dir():
        pytest.skip(f"real data folder {folder} is absent")
    tmp = tmp_path_factory.mktemp("frappe")
    pl.read_csv(folder / "train.csv", infer_schema=False, n_rows=20_000).write_csv(
        tmp / "train.csv"
    )
    pl.read_csv(folder / "valid.csv", infer_schema=False, n_rows=4_000).write_csv(tmp / "valid.csv")
    raw = yaml.safe_load((CONFIGS / "frappe_x1.yaml").read_text())
    raw["data"].update(
        train=str(tmp / "train.csv"),
        valid=str(tmp / "valid.csv"),
        test=str(tmp / "valid.csv"),
        cache_dir=str(tmp / "cache"),
    )
    raw["train"].update(max_epochs=1, batch_size=512, learning_rate=3e-3, progress=False)
    train_from_config(parse_config(raw), tmp / "run")
    return tmp / "run"


def test_frappe_test_rows_score_the_same_with_onnx_runtime(
    frappe_run: Path, shared_data: Path
) -> None:
    result = export_onnx(frappe_run)
    assert result.exporter == "torchscript" and result.max_abs_diff < 1e-5
    onnx_scores, torch_scores = _parity(frappe_run, shared_data / "frappe_x1" / "test.csv")
    assert onnx_scores.shape == (28_860, 1)
    assert torch_scores.std() > 0.05  # a trained model: the rows get different scores
    np.testing.assert_allclose(onnx_scores, torch_scores, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "model",
    [
        FINALMLP,  # gate contexts: categorical + numeric, and a sequence
        {**FINALMLP, "fs1_context": ["user"], "fs2_context": ["item"]},  # folded gates
        {**FINALMLP, "fs1_context": [], "fs2_context": []},  # context-free gates
        {**FINALMLP, "use_fs": False, "num_heads": 1},
        {"name": "dualmlp", "embedding_dim": 4, "mlp1": {"hidden_units": [8, 8]},
         "mlp2": {"hidden_units": [8], "batch_norm": True}},
        {"name": "lr"},
    ],
    ids=["finalmlp", "folded-gates", "context-free-gates", "no-gates", "dualmlp", "lr"],
)  # fmt: skip
def test_every_model_and_input_kind_exports(tmp_path: Path, model: dict) -> None:
    run_dir = make_run(tmp_path, model)
    export_onnx(run_dir)
    assert OnnxModel.from_run(run_dir).inputs == [
        "categorical", "numeric", "sequence_0", "sequence_1",
    ]  # fmt: skip
    rows(61, seed=5).write_csv(tmp_path / "score.csv")
    for batch_size in (1, 7, 16384):  # the batch axis is dynamic: any size, uneven last batch
        onnx_scores, torch_scores = _parity(run_dir, tmp_path / "score.csv", batch_size)
        assert torch_scores.std() > 0.01  # not constant: rows get different scores
        np.testing.assert_allclose(onnx_scores, torch_scores, rtol=0, atol=1e-5)


def test_a_graph_takes_only_the_inputs_the_model_has(tmp_path: Path) -> None:
    numeric_only = [{"name": "price", "type": "numeric"}]
    run_dir = make_run(tmp_path, {"name": "lr"}, features=numeric_only)
    export_onnx(run_dir)
    assert OnnxModel.from_run(run_dir).inputs == ["numeric"]
    rows(20, seed=2).write_csv(tmp_path / "score.csv")
    onnx_scores, torch_scores = _parity(run_dir, tmp_path / "score.csv")
    np.testing.assert_allclose(onnx_scores, torch_scores, rtol=0, atol=1e-5)


def test_export_keeps_the_run_loadable_and_records_its_hash(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    manifest = (run_dir / "manifest.json").read_text()
    export_onnx(run_dir)
    assert (run_dir / "manifest.json").read_text() == manifest
    load_run(run_dir)  # the run's content hash does not cover the export
    side = json.loads((run_dir / "model.onnx.json").read_text())
    assert side["sha256"] == file_sha256(run_dir / "model.onnx")
    assert side["run_content_sha256"] == json.loads(manifest)["content_sha256"]
    assert side["opset"] >= 17 and side["sequence_fields"] == ["history", "tags"]
    assert export_problem(run_dir) is None


def test_a_stale_or_edited_export_is_refused(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    with pytest.raises(DataError, match=r"has no model\.onnx; run `finalmlp export .* --onnx`"):
        OnnxModel.from_run(run_dir)
    export_onnx(run_dir)
    kept = {n: (run_dir / n).read_bytes() for n in ("model.onnx", "model.onnx.json")}
    make_run(tmp_path, seed=1)  # re-trained in place (other weights), which drops the export
    assert not (run_dir / "model.onnx").exists()
    for name, content in kept.items():  # the old export copied back in
        (run_dir / name).write_bytes(content)
    with pytest.raises(DataError, match="exported from another version of this run"):
        OnnxModel.from_run(run_dir)
    export_onnx(run_dir)
    with open(run_dir / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(DataError, match=r"model\.onnx does not match model\.onnx\.json"):
        OnnxModel.from_run(run_dir)
    (run_dir / "model.onnx.json").unlink()
    with pytest.raises(DataError, match=r"model\.onnx\.json is missing or damaged"):
        OnnxModel.from_run(run_dir)


def test_a_graph_that_scores_differently_is_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = make_run(tmp_path)
    monkeypatch.setattr(onnx_module, "PARITY_TOLERANCE", -1.0)
    with pytest.raises(ExportError, match=r"differ from PyTorch by up to .*; not kept"):
        export_onnx(run_dir)
    assert not (run_dir / "model.onnx").exists()
    assert not (run_dir / "model.onnx.json").exists()


def test_unreadable_graph_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(DataError, match=r"cannot load the ONNX graph .*model\.onnx"):
        OnnxModel(tmp_path / "model.onnx")


@pytest.mark.slow
def test_dynamo_exporter_also_gives_a_graph_ort_runs(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    assert export_onnx(run_dir, exporter="dynamo").exporter == "dynamo"
    rows(30, seed=3).write_csv(tmp_path / "score.csv")
    onnx_scores, torch_scores = _parity(run_dir, tmp_path / "score.csv", 7)
    np.testing.assert_allclose(onnx_scores, torch_scores, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- CLI
def test_cli_export_writes_the_graph(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, {"name": "lr"})
    result = CliRunner().invoke(app, ["export", str(run_dir), "--onnx"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert f"wrote {run_dir / 'model.onnx'} (torchscript exporter, opset 18" in result.stdout
    assert export_problem(run_dir) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "error: choose an export format: --onnx (the only one so far)"),
        (["--onnx", "--opset", "11"], "error: --opset must be 17 or later, got 11"),
    ],
)
def test_cli_export_option_errors(tmp_path: Path, args: list[str], message: str) -> None:
    run_dir = make_run(tmp_path, {"name": "lr"})
    result = CliRunner().invoke(app, ["export", str(run_dir), *args])
    assert result.exit_code == USER_ERROR_EXIT
    assert result.stderr.splitlines() == [message]


def test_cli_export_of_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["export", str(tmp_path), "--onnx"])
    assert result.exit_code == USER_ERROR_EXIT
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "is not a finalmlp run directory (manifest.json missing)" in lines[0]
