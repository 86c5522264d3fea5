"""``schema infer`` on libsvm/libFM and libFFM files: fields, feature kinds, a config that reads."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from finalmlp.cli.main import app
from finalmlp.config import parse_config
from finalmlp.data.readers import read_file
from finalmlp.errors import SchemaError
from finalmlp.features.infer import infer_schema
from finalmlp.features.infer_libsvm import sparse_format

FRAPPE_STARTS = [0, 957, 5039, 5046, 5053, 5055, 5058, 5060, 5069, 5149, 5382]


def _write(tmp_path: Path, text: str, name: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _features(data: dict[str, object]) -> dict[str, dict[str, object]]:
    return {f["name"]: f for f in data["features"]}  # type: ignore[attr-defined, index]


def test_frappe_libfm_fields_are_found_by_position(shared_data: Path) -> None:
    path = shared_data / "frappe" / "frappe.test.libfm"
    result = infer_schema(path)
    data = result.data
    assert data["format"] == "libsvm" and data["label"] == "label"
    ranges = [(r["start"], r["end"]) for r in data["libsvm"]["fields"]]
    # The published ranges, except the last one, which ends at the highest index seen.
    assert ranges[:-1] == list(itertools.pairwise(FRAPPE_STARTS[:-1]))
    assert ranges[-1][0] == FRAPPE_STARTS[-2]
    assert all(f["type"] == "categorical" for f in data["features"])
    assert len(data["features"]) == 10
    config = parse_config(yaml.safe_load(result.to_yaml()))
    frame = read_file(path, config.data)
    assert frame.height == 28_860 and frame.columns == ["label", *[f"f{k}" for k in range(10)]]


def test_criteo_libffm_multi_valued_fields_become_sequences(shared_data: Path) -> None:
    path = shared_data / "criteo_libffm_sample" / "small_train.txt"
    result = infer_schema(path)
    data = result.data
    assert data["format"] == "libffm"  # from the tokens: the file is a .txt
    features = _features(data)
    assert features["f16"]["type"] == features["f17"]["type"] == "sequence"
    assert "f11" not in features  # one index in every line: constant
    config = parse_config(yaml.safe_load(result.to_yaml()))
    assert read_file(path, config.data).height == 200  # the categorical fields hold one index


def test_numeric_field_and_field_map(tmp_path: Path) -> None:
    featindex = _write(tmp_path, "user:a\t0\nuser:b\t1\nprice\t2\ntags:x\t3\ntags:y\t4\n", "fi.txt")
    lines = [f"{i % 2} {i % 2}:1 2:{i * 0.5} {3 + i % 2}:1" for i in range(40)]
    lines[3] += " 3:1"  # a line with two tags
    path = _write(tmp_path, "\n".join(lines) + "\n", "train.svm")
    result = infer_schema(path, field_map=featindex)
    features = _features(result.data)
    assert features["user"]["type"] == "categorical"
    assert features["price"]["type"] == "numeric"
    assert features["tags"]["type"] == "sequence"
    assert result.data["libsvm"] == {"field_map": str(featindex.resolve())}
    config = parse_config(yaml.safe_load(result.to_yaml()))
    assert read_file(path, config.data)["price"].to_list()[:3] == [0.0, 0.5, 1.0]


def test_libsvm_without_positional_fields_asks_for_a_field_map(tmp_path: Path) -> None:
    path = _write(tmp_path, "1 0:1 5:1\n0 2:1\n", "train.libsvm")
    with pytest.raises(SchemaError, match=r"lines hold 1 to 2 indices.*pass --field-map"):
        infer_schema(path)
    overlapping = _write(tmp_path, "1 0:1 5:1\n0 6:1 9:1\n", "overlap.libsvm")
    with pytest.raises(SchemaError, match=r"overlap those at the next.*--field-map"):
        infer_schema(overlapping)


@pytest.mark.parametrize(
    ("text", "name", "expected"),
    [
        ("1 3:1 7:0.5\n", "a.txt", "libsvm"),
        ("-1 0:3:1 1:7:1\n", "a.txt", "libffm"),
        ("label,user\n1,a\n", "a.txt", None),
        ("1 2 3\n", "a.txt", None),
        ("label,user\n", "a.libfm", "libsvm"),  # the suffix decides
    ],
)
def test_sparse_format_detection(
    tmp_path: Path, text: str, name: str, expected: str | None
) -> None:
    assert sparse_format(_write(tmp_path, text, name), None) == expected


def test_cli_schema_infer_on_a_libsvm_file(tmp_path: Path) -> None:
    lines = [f"{i % 2} {i % 3}:1 {10 + i % 4}:1" for i in range(30)]
    path = _write(tmp_path, "\n".join(lines) + "\n", "train.libsvm")
    result = CliRunner().invoke(app, ["schema", "infer", str(path)])
    assert result.exit_code == 0, result.output
    config = parse_config(yaml.safe_load(result.stdout))
    assert config.data.format == "libsvm"
    assert [f.name for f in config.data.features] == ["f0", "f1"]
