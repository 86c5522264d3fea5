"""Batch scoring in chunks: the same scores as scoring the whole file at once, in input order,
id columns passed through as read, either backend, atomic output, errors that name the line."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from serve_runs import make_run, rows
from typer.testing import CliRunner

import finalmlp.serve.batch as batch_module
from finalmlp.bundle import load_run
from finalmlp.cli.main import USER_ERROR_EXIT, app
from finalmlp.errors import ConfigError, DataError, SchemaError
from finalmlp.predict import predict_file
from finalmlp.schema import DataConfig
from finalmlp.serve.batch import file_config, score_file
from finalmlp.serve.onnx import export_onnx
from finalmlp.serve.scorer import Scorer


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run over every input kind (categorical, numeric, bucketized, two sequences)."""
    return make_run(tmp_path_factory.mktemp("batch"))


def _whole_file_scores(run_dir: Path, data: pl.DataFrame) -> np.ndarray:
    """The reference: all rows at once through the HTTP service's scoring path."""
    scorer = Scorer(load_run(run_dir))
    frame = data.with_columns(pl.col("price").cast(pl.Float64, strict=False))
    return scorer.score_frame(frame)[:, 0]


def test_chunks_score_like_the_whole_file_in_order_with_ids_as_read(
    run_dir: Path, tmp_path: Path
) -> None:
    data = rows(103, seed=11).with_row_index("row_id", offset=1).cast({"row_id": pl.Utf8})
    data = data.with_columns(pl.format("00{}", "row_id").alias("row_id"))  # "001": kept as text
    data.write_csv(tmp_path / "in.csv")
    report = score_file(
        run_dir, tmp_path / "in.csv", tmp_path / "out.csv",
        id_columns=["row_id", "item"], backend="torch", chunk_rows=10,
    )  # fmt: skip
    assert report.rows == 103 and report.backend == "torch"
    out = pl.read_csv(tmp_path / "out.csv", infer_schema=False)
    assert out.columns == ["row_id", "item", "score"]
    assert out["row_id"].to_list() == data["row_id"].to_list()  # "001"..., in input order
    assert out["item"].to_list() == data["item"].to_list()
    expected = _whole_file_scores(run_dir, data)
    assert expected.std() > 0.05
    np.testing.assert_allclose(
        out["score"].cast(pl.Float64).to_numpy(), expected, rtol=1e-6
    )  # batch sizes differ: float rounding only


def test_parquet_in_and_out_keeps_dtypes_and_scores(run_dir: Path, tmp_path: Path) -> None:
    data = rows(57, seed=12).with_row_index("id")  # UInt32 ids
    data.write_parquet(tmp_path / "in.parquet", row_group_size=20)
    data.write_csv(tmp_path / "in.csv")
    score_file(run_dir, tmp_path / "in.parquet", tmp_path / "out.pq", id_columns=["id"],
               backend="torch", chunk_rows=8)  # fmt: skip
    score_file(run_dir, tmp_path / "in.csv", tmp_path / "out.tsv", backend="torch")
    parquet = pl.read_parquet(tmp_path / "out.pq")
    assert parquet.schema == pl.Schema({"id": pl.UInt32, "score": pl.Float64})
    assert parquet["id"].to_list() == list(range(57))
    text = pl.read_csv(tmp_path / "out.tsv", separator="\t")
    np.testing.assert_allclose(
        parquet["score"].to_numpy(), text["score"].to_numpy(), rtol=1e-6
    )  # batch sizes differ: float rounding only


def test_onnx_backend_scores_like_torch_and_exports_only_to_a_temp_dir(
    run_dir: Path, tmp_path: Path
) -> None:
    rows(40, seed=13).write_csv(tmp_path / "in.csv")
    scores = {}
    for backend in ("torch", "onnx"):
        out = tmp_path / f"{backend}.csv"
        report = score_file(run_dir, tmp_path / "in.csv", out, backend=backend, chunk_rows=16)
        assert report.backend == backend
        scores[backend] = pl.read_csv(out)["score"].to_numpy()
    assert report.choice == "requested (temporary export)"
    assert not (run_dir / "model.onnx").exists()  # the bundle is left as it was
    np.testing.assert_allclose(scores["onnx"], scores["torch"], rtol=0, atol=1e-5)


def test_auto_measures_both_backends_on_a_large_first_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = make_run(tmp_path / "auto")
    rows(300, seed=14).write_csv(tmp_path / "in.csv")
    report = score_file(run_dir, tmp_path / "in.csv", tmp_path / "a.csv", chunk_rows=1000)
    assert report.backend == "torch"  # too few rows to measure, and no model.onnx
    assert report.choice == "auto: 300 rows, too few to measure; PyTorch (no current model.onnx)"
    export_onnx(run_dir)
    report = score_file(run_dir, tmp_path / "in.csv", tmp_path / "b.csv", chunk_rows=1000)
    assert report.backend == "onnx" and "ONNX Runtime (model.onnx is current)" in report.choice

    monkeypatch.setattr(batch_module, "AUTO_MIN_ROWS", 100)
    monkeypatch.setattr(batch_module, "AUTO_SAMPLE_ROWS", 150)
    report = score_file(run_dir, tmp_path / "in.csv", tmp_path / "c.csv", chunk_rows=200)
    assert report.backend in ("torch", "onnx")
    assert report.choice.startswith("auto: torch ") and " rows/s on 150 rows (model.onnx)" in (
        report.choice
    )
    reference = pl.read_csv(tmp_path / "a.csv")["score"].to_numpy()
    measured = pl.read_csv(tmp_path / "c.csv")["score"].to_numpy()  # sample rows reused
    np.testing.assert_allclose(measured, reference, rtol=0, atol=1e-5)


def test_file_format_follows_the_suffix_else_the_config(tmp_path: Path) -> None:
    tsv = DataConfig.model_validate(
        {"format": "tsv", "train": "x", "has_header": False, "columns": ["label", "user"],
         "features": [{"name": "user", "type": "categorical"}]}
    )  # fmt: skip
    assert file_config(tsv, Path("day_1.txt")) is tsv
    assert file_config(tsv, Path("rows.csv")).format == "csv"
    assert file_config(tsv, Path("rows.PQ")).format == "parquet"
    assert file_config(tsv, Path("rows.csv.gz")).format == "csv"
    assert file_config(tsv, Path("day_1.gz")) is tsv
    semicolon = tsv.model_copy(update={"format": "csv", "separator": ";"})
    assert file_config(semicolon, Path("rows.csv")).separator == ";"
    assert file_config(semicolon, Path("rows.tsv")).separator is None  # the TSV default


# ----------------------------------------------------------------------------- errors
def test_missing_id_column_is_named(run_dir: Path, tmp_path: Path) -> None:
    rows(5).write_csv(tmp_path / "in.csv")
    with pytest.raises(SchemaError, match=r"id column\(s\) \['request'\] not found in .*in\.csv"):
        score_file(run_dir, tmp_path / "in.csv", tmp_path / "out.csv", id_columns=["request"])
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backend": "gpu"}, r"backend must be one of \['auto', 'torch', 'onnx'\], got 'gpu'"),
        ({"chunk_rows": 0}, "chunk_rows must be at least 1, got 0"),
        ({"id_columns": ["score"]}, "id column 'score' would clash with the output column"),
        ({"id_columns": ["user", "user"]}, r"id column\(s\) \['user'\] listed more than once"),
    ],
)
def test_bad_options(run_dir: Path, tmp_path: Path, options: dict, message: str) -> None:
    rows(5).write_csv(tmp_path / "in.csv")
    with pytest.raises(ConfigError, match=message):
        score_file(run_dir, tmp_path / "in.csv", tmp_path / "out.csv", **options)


def test_bad_value_in_a_later_chunk_names_its_line_and_writes_nothing(
    run_dir: Path, tmp_path: Path
) -> None:
    data = rows(60, seed=15)
    price = data["price"].to_list()
    price[44] = "cheap"  # data row 45 = line 46 of the file (header on line 1)
    data.with_columns(pl.Series("price", price)).write_csv(tmp_path / "in.csv")
    (tmp_path / "out.csv").write_text("earlier output\n")
    with pytest.raises(DataError, match=r"column 'price' must be numeric, got 'cheap' on line 46 "):
        score_file(run_dir, tmp_path / "in.csv", tmp_path / "out.csv", chunk_rows=10,
                   backend="torch")  # fmt: skip
    assert (tmp_path / "out.csv").read_text() == "earlier output\n"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.csv"]  # no temp file


def test_ragged_line_and_empty_file(run_dir: Path, tmp_path: Path) -> None:
    rows(8).write_csv(tmp_path / "in.csv")
    lines = (tmp_path / "in.csv").read_text().splitlines()
    lines[4] += ",extra"
    (tmp_path / "ragged.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"line 5 of .*ragged\.csv has 8 fields, expected 7"):
        score_file(run_dir, tmp_path / "ragged.csv", tmp_path / "out.csv")
    (tmp_path / "header.csv").write_text(lines[0] + "\n")
    with pytest.raises(DataError, match=r"header\.csv has no data rows"):
        score_file(run_dir, tmp_path / "header.csv", tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_gzip_input_and_nan_text_score_like_plain_missing_values(
    run_dir: Path, tmp_path: Path
) -> None:
    data = rows(30, seed=17)
    data.write_csv(tmp_path / "in.csv")
    (tmp_path / "in.csv.gz").write_bytes(gzip.compress((tmp_path / "in.csv").read_bytes()))
    price = data["price"].to_list()
    price[1], price[2] = "NaN", "inf"  # as the server does: missing, i.e. the fill value
    data.with_columns(pl.Series("price", price)).write_csv(tmp_path / "nan.csv")
    for name in ("in.csv", "in.csv.gz", "nan.csv"):
        score_file(run_dir, tmp_path / name, tmp_path / f"{name}.out.csv", backend="torch")
    plain = pl.read_csv(tmp_path / "in.csv.out.csv")["score"].to_numpy()
    np.testing.assert_array_equal(pl.read_csv(tmp_path / "in.csv.gz.out.csv")["score"], plain)
    with_nan = pl.read_csv(tmp_path / "nan.csv.out.csv")["score"].to_numpy()
    assert with_nan[1] == plain[1]  # row 1's price is already missing in `rows`
    assert with_nan[2] != plain[2] and np.isfinite(with_nan).all()


def test_quoted_fields_spanning_lines_still_name_the_right_line(
    run_dir: Path, tmp_path: Path
) -> None:
    data = rows(12, seed=18).with_columns(pl.lit("a\nb").alias("note"))
    price = data["price"].to_list()
    price[9] = "cheap"  # data row 10; each earlier record spans two lines: line 2 + 9 * 2
    data = data.with_columns(pl.Series("price", price), pl.col("note").str.replace("\\n", "\n"))
    data.write_csv(tmp_path / "in.csv")
    assert (tmp_path / "in.csv").read_text().count("\n") == 1 + 2 * 12
    with pytest.raises(DataError, match=r"got 'cheap' on line 20 of "):
        score_file(run_dir, tmp_path / "in.csv", tmp_path / "out.csv", chunk_rows=4,
                   backend="torch")  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda lines: lines.insert(5, lines[0]), r"line 6 of .*in\.csv repeats the header"),
        (lambda lines: lines.insert(3, ""), r"line 4 of .*in\.csv is blank, expected 7"),
    ],
    ids=["repeated-header", "blank-line"],
)
def test_bad_lines_are_named_before_scoring(
    run_dir: Path, tmp_path: Path, change: object, message: str
) -> None:
    rows(8).write_csv(tmp_path / "in.csv")
    lines = (tmp_path / "in.csv").read_text().splitlines()
    change(lines)  # type: ignore[operator]
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message):
        score_file(run_dir, tmp_path / "in.csv", tmp_path / "out.csv")


def test_compressed_output_is_refused(run_dir: Path, tmp_path: Path) -> None:
    rows(5).write_csv(tmp_path / "in.csv")
    with pytest.raises(ConfigError, match=r"cannot write compressed output .*out\.csv\.gz"):
        score_file(run_dir, tmp_path / "in.csv", tmp_path / "out.csv.gz")


# ----------------------------------------------------------------------------- CLI
def test_cli_predict_with_ids_and_backend(run_dir: Path, tmp_path: Path) -> None:
    rows(30, seed=16).write_csv(tmp_path / "in.csv")
    args = ["predict", str(run_dir), "--input", str(tmp_path / "in.csv"), "--output",
            str(tmp_path / "out.csv"), "--id-columns", "user, item", "--backend", "torch",
            "--chunk-rows", "7"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "scored 30 rows in " in result.stderr and "with torch [requested]" in result.stderr
    assert pl.read_csv(tmp_path / "out.csv").columns == ["user", "item", "score"]
    assert predict_file(run_dir, tmp_path / "in.csv", tmp_path / "again.csv") == 30


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--id-columns", "nope"], "error: id column(s) ['nope'] not found in "),
        (["--backend", "tpu"], "error: backend must be one of ['auto', 'torch', 'onnx'], got"),
    ],
)
def test_cli_predict_errors_are_one_line(
    run_dir: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    rows(5).write_csv(tmp_path / "in.csv")
    args = ["predict", str(run_dir), "--input", str(tmp_path / "in.csv"), "--output",
            str(tmp_path / "out.csv"), *extra]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == USER_ERROR_EXIT
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
