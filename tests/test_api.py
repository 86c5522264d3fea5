"""The Python API (finalmlp.train / load_run / Run): the README example, scoring in input
order, the same scores as the command line's paths, and library errors (never SystemExit)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

import finalmlp
from finalmlp.config import parse_config
from finalmlp.errors import ConfigError, DataError, SchemaError
from finalmlp.predict import evaluate_run, predict_file
from finalmlp.serve.scorer import RecordError

README = Path(__file__).resolve().parents[1] / "README.md"
TINY = {
    "model": {
        "name": "finalmlp",
        "embedding_dim": 4,
        "mlp1": {"hidden_units": [16]},
        "mlp2": {"hidden_units": [8]},
        "fs_hidden_units": [8],
        "fs1_context": ["c0"],
        "num_heads": 2,
    },
    "train": {"batch_size": 256, "max_epochs": 1, "seed": 3},
}


def synthetic_config(tmp: Path, **synthetic: Any) -> dict[str, Any]:
    options = {"num_rows": 3000, "seed": 5, **synthetic}
    return {
        "data": {
            "recipe": "synthetic",
            "synthetic": options,
            "split": {"valid_fraction": 0.2, "test_fraction": 0.2, "seed": 1},
            "cache_dir": str(tmp / "cache"),
        },
        **TINY,
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> finalmlp.Run:
    tmp = tmp_path_factory.mktemp("api")
    return finalmlp.train(synthetic_config(tmp), out=tmp / "run")


@pytest.fixture(scope="module")
def rows() -> pl.DataFrame:
    return finalmlp.synthetic_data(500, seed=5)


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## From Python", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "README: no python block under '## From Python'"
    return match.group(1)


def test_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(readme_example(), str(README), "exec"), namespace)
    run, probs, holdout = namespace["run"], namespace["probs"], namespace["holdout"]
    assert isinstance(run, finalmlp.Run) and isinstance(namespace["same"], finalmlp.Run)
    assert probs.shape == (holdout.height,) and np.all((probs > 0) & (probs < 1))
    assert (tmp_path / "runs" / "clicks" / "manifest.json").is_file()
    assert (tmp_path / "clicks.onnx").stat().st_size > 0
    assert "probability_check" in run.metrics


def test_train_accepts_path_dict_and_pydantic(tmp_path: Path) -> None:
    config = synthetic_config(tmp_path, num_rows=600)
    config["data"]["split"] = {"valid_fraction": 0.25, "test_fraction": 0.25, "seed": 1}
    yaml_file = tmp_path / "c.yaml"
    import yaml

    yaml_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    runs = [
        finalmlp.train(yaml_file, out=tmp_path / "a"),
        finalmlp.train(config, out=tmp_path / "b"),
        finalmlp.train(parse_config(config), out=tmp_path / "c"),
    ]
    aucs = [run.metrics["test"]["auc"] for run in runs]
    assert aucs[0] == aucs[1] == aucs[2]  # the same config, the same seed


def test_predict_keeps_input_order_for_every_input_kind(
    trained: finalmlp.Run, rows: pl.DataFrame
) -> None:
    probs = trained.predict(rows)
    assert probs.shape == (rows.height,) and probs.dtype == np.float64
    order = np.random.default_rng(0).permutation(rows.height)
    np.testing.assert_allclose(trained.predict(rows[order]), probs[order], rtol=1e-6)
    records = rows.drop("label").to_dicts()
    np.testing.assert_allclose(trained.predict(records), probs, rtol=1e-6)
    assert trained.tasks == ["label"]


def test_predict_and_evaluate_match_the_command_line_paths(
    trained: finalmlp.Run, rows: pl.DataFrame, tmp_path: Path
) -> None:
    source = tmp_path / "rows.csv"
    rows.write_csv(source)
    predict_file(trained.path, source, tmp_path / "scores.csv")
    scores = pl.read_csv(tmp_path / "scores.csv")["score"].to_numpy()
    np.testing.assert_allclose(trained.predict(rows), scores, rtol=1e-5, atol=1e-7)
    expected = evaluate_run(trained.path, source)
    got = trained.evaluate(rows)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-6)
    from_records = trained.evaluate(rows.to_dicts())
    assert from_records["auc"] == pytest.approx(expected["auc"], rel=1e-6)


def test_pandas_frame_scores_as_polars(trained: finalmlp.Run, rows: pl.DataFrame) -> None:
    pytest.importorskip("pandas")
    np.testing.assert_allclose(trained.predict(rows.to_pandas()), trained.predict(rows))


def test_multitask_run_predicts_n_by_t(tmp_path: Path) -> None:
    config = synthetic_config(tmp_path, num_rows=2000, conversion=True)
    config["data"]["labels"] = [{"name": "click", "column": "label"}, {"name": "conversion"}]
    run = finalmlp.train(config, out=tmp_path / "mt")
    rows = finalmlp.synthetic_data(300, seed=5, conversion=True)
    probs = run.predict(rows)
    assert run.tasks == ["click", "conversion"] and probs.shape == (300, 2)
    metrics = run.evaluate(rows)
    assert {"click.auc", "conversion.auc", "auc"} <= set(metrics)


def test_export_onnx_to_a_path_and_to_the_run(trained: finalmlp.Run, tmp_path: Path) -> None:
    target = trained.export_onnx(tmp_path / "m.onnx")
    assert target == tmp_path / "m.onnx" and target.stat().st_size > 0
    import onnxruntime

    names = [i.name for i in onnxruntime.InferenceSession(str(target)).get_inputs()]
    assert names[0] == "categorical"
    with pytest.raises(ConfigError, match="opset must be 17"):
        trained.export_onnx(tmp_path / "x.onnx", opset=11)


def test_errors_are_library_exceptions_not_system_exit(
    trained: finalmlp.Run, rows: pl.DataFrame, tmp_path: Path
) -> None:
    with pytest.raises(SchemaError, match=r"\['c3'\] not found in the rows given"):
        trained.predict(rows.drop("c3"))
    with pytest.raises(SchemaError, match="label"):
        trained.evaluate(rows.drop("label"))
    bad = rows.with_columns(pl.col("n1").cast(pl.Utf8)).with_columns(
        pl.when(pl.int_range(pl.len()) == 4).then(pl.lit("abc")).otherwise(pl.col("n1")).alias("n1")
    )
    with pytest.raises(DataError, match=r"'n1'.*'abc'.*row 5 of the rows given"):
        trained.predict(bad)
    with pytest.raises(RecordError, match=r"record 1, field 'n0': expected a number"):
        trained.predict([{"c0": "1"}, {"c0": "2", "n0": "x"}])
    with pytest.raises(DataError, match="list of dicts"):
        trained.predict(42)
    with pytest.raises(ConfigError, match=r"config dict: missing required key 'model\.name'"):
        finalmlp.train({**synthetic_config(tmp_path), "model": {"nmae": "x"}}, out=tmp_path / "r")
    with pytest.raises(ConfigError, match="not found"):
        finalmlp.train(tmp_path / "missing.yaml", out=tmp_path / "r")
    with pytest.raises(DataError, match="not a finalmlp run directory"):
        finalmlp.load_run(tmp_path)
    with pytest.raises(ConfigError, match="synthetic_data: num_rows"):
        finalmlp.synthetic_data(3)


def test_import_is_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, finalmlp; print(any(m.startswith(('torch', 'polars')) for m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
