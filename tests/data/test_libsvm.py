"""libsvm/libFM and libFFM reader: real files against a plain-Python parse, and every error."""

from __future__ import annotations

import json
import time
from pathlib import Path

import polars as pl
import pytest

from finalmlp.data.libsvm import read_libsvm
from finalmlp.errors import ConfigError, DataError
from finalmlp.schema import (
    CategoricalFeature,
    FieldRange,
    LibsvmOptions,
    NumericFeature,
    SequenceFeature,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
FRAPPE = SHARED_DATA / "frappe"
CRITEO_FFM = SHARED_DATA / "criteo_libffm_sample" / "small_train.txt"
needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"real data folder {SHARED_DATA} not present"
)

# Frappe field ranges, as documented in shared/data/frappe/SOURCE.md (checked against the data
# by test_frappe_matches_python_parse: the k-th token of every line falls in the k-th range).
FRAPPE_FIELDS = ["user", "item", "daytime", "weekday", "isweekend"]
FRAPPE_FIELDS += ["homework", "cost", "weather", "country", "city"]
FRAPPE_STARTS = [0, 957, 5039, 5046, 5053, 5055, 5058, 5060, 5069, 5149, 5382]
FRAPPE_OPTIONS = LibsvmOptions(
    fields=[
        FieldRange(name=name, start=start, end=end)
        for name, start, end in zip(FRAPPE_FIELDS, FRAPPE_STARTS, FRAPPE_STARTS[1:], strict=False)
    ]
)
AB_OPTIONS = LibsvmOptions(
    fields=[FieldRange(name="a", start=0, end=3), FieldRange(name="b", start=3, end=10)]
)


def _write(tmp_path: Path, text: str, name: str = "f.libfm") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _python_parse(path: Path, ffm: bool) -> list[tuple[float, dict[int, str]]]:
    """Reference parse: (label, {field position or number: "^"-joined indices}) per line."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        label, *tokens = line.split()
        fields: dict[int, list[str]] = {}
        for position, token in enumerate(tokens):
            parts = token.split(":")
            field = int(parts[0]) if ffm else position
            fields.setdefault(field, []).append(str(int(parts[-2])))
        rows.append((max(float(label), 0.0), {k: "^".join(v) for k, v in fields.items()}))
    return rows


# ----------------------------------------------------------------------------- real data
@needs_shared_data
def test_frappe_matches_python_parse() -> None:
    path = FRAPPE / "frappe.test.libfm"
    table = read_libsvm(path, FRAPPE_OPTIONS, label="label", features=[])
    assert table.columns == ["label", *FRAPPE_FIELDS]
    assert table.schema["label"] == pl.Float64
    assert all(table.schema[name] == pl.String for name in FRAPPE_FIELDS)
    assert table.height == 28_860
    assert table["label"].sum() == 9_536  # positives per SOURCE.md; -1 became 0
    assert table.null_count().sum_horizontal().item() == 0
    expected = _python_parse(path, ffm=False)
    assert table["label"].to_list() == [label for label, _ in expected]
    for position, name in enumerate(FRAPPE_FIELDS):
        assert table[name].to_list() == [fields[position] for _, fields in expected]
        idx = table[name].cast(pl.Int64)
        assert idx.min() >= FRAPPE_STARTS[position] and idx.max() < FRAPPE_STARTS[position + 1]


@needs_shared_data
def test_frappe_field_map_gives_same_table(tmp_path: Path) -> None:
    field_of = {
        str(idx): name
        for name, start, end in zip(FRAPPE_FIELDS, FRAPPE_STARTS, FRAPPE_STARTS[1:], strict=False)
        for idx in range(start, end)
    }
    field_map = _write(tmp_path, json.dumps(field_of), "fields.json")
    path = FRAPPE / "frappe.test.libfm"
    by_map = read_libsvm(path, LibsvmOptions(field_map=field_map), label="y", features=[])
    by_ranges = read_libsvm(path, FRAPPE_OPTIONS, label="y", features=[])
    assert by_map.equals(by_ranges)


@needs_shared_data
def test_frappe_validation_parses_fast() -> None:
    path = FRAPPE / "frappe.validation.libfm"
    read_libsvm(path, FRAPPE_OPTIONS, label="label", features=[])  # warm up
    start = time.perf_counter()
    table = read_libsvm(path, FRAPPE_OPTIONS, label="label", features=[])
    elapsed = time.perf_counter() - start
    assert table.shape == (57_722, 11)
    assert elapsed < 1.5, f"57k lines took {elapsed:.2f} s (about 0.2 s expected)"


@needs_shared_data
def test_criteo_libffm_matches_python_parse() -> None:
    table = read_libsvm(CRITEO_FFM, LibsvmOptions(), label="click", features=[], ffm=True)
    assert table.columns == ["click", *[f"f{i}" for i in range(18)]]
    assert table.height == 200 and table["click"].sum() == 48
    expected = _python_parse(CRITEO_FFM, ffm=True)
    for field in range(18):
        assert table[f"f{field}"].to_list() == [fields.get(field) for _, fields in expected]
    assert table["f17"].str.contains("^", literal=True).any()  # several indices, joined


@needs_shared_data
def test_criteo_libffm_named_and_numeric_fields() -> None:
    names = [f"c{i}" for i in range(18)]
    options = LibsvmOptions(field_names=names)
    features = [NumericFeature(name="weight", source="c2"), CategoricalFeature(name="c3")]
    table = read_libsvm(CRITEO_FFM, options, label="label", features=features, ffm=True)
    assert table.columns == ["label", *names]
    assert table.schema["c2"] == pl.Float64 and table.schema["c3"] == pl.String
    assert table["c2"][0] == pytest.approx(0.3651)


# ----------------------------------------------------------------------------- tiny files
def test_several_indices_of_a_field_are_joined_in_file_order(tmp_path: Path) -> None:
    path = _write(tmp_path, "1 2:1 5:1 1:1\n-1 3:1\n0\n")
    table = read_libsvm(path, AB_OPTIONS, label="label", features=[])
    assert table.to_dicts() == [
        {"label": 1.0, "a": "2^1", "b": "5"},
        {"label": 0.0, "a": None, "b": "3"},
        {"label": 0.0, "a": None, "b": None},
    ]


def test_sequence_feature_separator_is_used(tmp_path: Path) -> None:
    path = _write(tmp_path, "1 2:1 1:1 5:1 4:1\n")
    features = [SequenceFeature(name="a", separator="|")]
    table = read_libsvm(path, AB_OPTIONS, label="label", features=features)
    assert table.row(0) == (1.0, "2|1", "5^4")


def test_numeric_fields_hold_values(tmp_path: Path) -> None:
    path = _write(tmp_path, "1 0:1 3:0.25\n0 1:1\n1 7:-2e3\n")
    features = [NumericFeature(name="price", source="b")]
    table = read_libsvm(path, AB_OPTIONS, label="clicked", features=features)
    assert table.schema == pl.Schema({"clicked": pl.Float64, "a": pl.String, "b": pl.Float64})
    assert table["b"].to_list() == [0.25, None, -2000.0]
    assert table["a"].to_list() == ["0", "1", None]


def test_blank_lines_tabs_and_signs(tmp_path: Path) -> None:
    path = _write(tmp_path, "+1\t0:1   4:1\r\n\n   \n-1 007:1\n")
    table = read_libsvm(path, AB_OPTIONS, label="label", features=[])
    assert table.to_dicts() == [
        {"label": 1.0, "a": "0", "b": "4"},
        {"label": 0.0, "a": None, "b": "7"},
    ]


@pytest.mark.parametrize("line", ["1  0:1", " 1 0:1", "1 0:1 ", "1\t0:1", "1 0:1\r"])
def test_irregular_whitespace(tmp_path: Path, line: str) -> None:
    path = _write(tmp_path, f"0 4:1\n{line}\n")
    table = read_libsvm(path, AB_OPTIONS, label="label", features=[])
    assert table.rows() == [(0.0, None, "4"), (1.0, "0", None)]


def test_field_absent_everywhere_is_a_null_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "1 0:1\n")
    options = LibsvmOptions(
        fields=[
            FieldRange(name="a", start=0, end=3),
            FieldRange(name="b", start=3, end=10),
            FieldRange(name="a", start=20, end=30),  # a second range of field a
        ]
    )
    features = [NumericFeature(name="b")]
    table = read_libsvm(path, options, label="label", features=features)
    assert table.columns == ["label", "a", "b"]
    assert table["b"].dtype == pl.Float64 and table["b"].null_count() == 1


def test_ffm_with_field_names(tmp_path: Path) -> None:
    path = _write(tmp_path, "1 1:10:1 0:3:1 1:11:1\n0 0:4:0.5\n")
    options = LibsvmOptions(field_names=["user", "item", "ctx"])
    table = read_libsvm(path, options, label="label", features=[], ffm=True)
    assert table.to_dicts() == [
        {"label": 1.0, "user": "3", "item": "10^11", "ctx": None},
        {"label": 0.0, "user": "4", "item": None, "ctx": None},
    ]


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 0:1\n1 abc\n", r"token 'abc' on line 2 of .*f\.libfm is not `idx:val`"),
        ("1 0:1\n1 1:2:1\n", r"token '1:2:1' on line 2 .*set data\.format: libffm"),
        ("1 -3:1\n", r"token '-3:1' on line 1 .*non-negative integer"),
        ("1 0:1\nyes 1:1\n", r"label 'yes' on line 2 of .*f\.libfm is not a number; expected 1"),
        ("2 0:1\n", r"label '2' on line 1 .* is not a binary label; expected 1, 0 or -1"),
        ("1 0:1\n\n0 1:x\n", r"token '1:x' on line 3 of .* does not hold numbers.*got 'x'"),
        ("1 99999999999999999999:1\n", r"token '9+:1' on line 1 .* does not hold numbers"),
    ],
)
def test_malformed_lines(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(DataError, match=message):
        read_libsvm(path, AB_OPTIONS, label="label", features=[])


def test_malformed_ffm_token(tmp_path: Path) -> None:
    path = _write(tmp_path, "1 0:1:1\n0 3:1\n")
    with pytest.raises(DataError, match=r"token '3:1' on line 2 .* is not `field:idx:val`"):
        read_libsvm(path, LibsvmOptions(), label="label", features=[], ffm=True)


def test_index_in_no_range(tmp_path: Path) -> None:
    path = _write(tmp_path, "1 0:1\n" * 11 + "0 1:1 9999:1\n")
    message = r"index 9999 on line 12 of .*f\.libfm is in no field range; extend data\.libsvm"
    with pytest.raises(DataError, match=message):
        read_libsvm(path, AB_OPTIONS, label="label", features=[])


def test_index_not_in_field_map(tmp_path: Path) -> None:
    field_map = _write(tmp_path, '{"0": "a", "2": "b"}', "map.json")
    path = _write(tmp_path, "1 0:1 2:1\n1 1:1\n")
    with pytest.raises(DataError, match=r"index 1 on line 2 .* is not in the field map .*map"):
        read_libsvm(path, LibsvmOptions(field_map=field_map), label="label", features=[])


@pytest.mark.parametrize("text", ["", "\n  \n\t\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(DataError, match=r"libsvm file .*f\.libfm is empty; expected one example"):
        read_libsvm(path, AB_OPTIONS, label="label", features=[])


def test_missing_and_undecodable_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"libsvm file '.*nope\.libfm' not found"):
        read_libsvm(tmp_path / "nope.libfm", AB_OPTIONS, label="label", features=[])
    path = tmp_path / "latin1.libfm"
    path.write_bytes(b"1 0:1 \xff\n")
    with pytest.raises(DataError, match=r"cannot read .*latin1\.libfm as UTF-8"):
        read_libsvm(path, AB_OPTIONS, label="label", features=[])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"field map '.*map\.json' \(data\.libsvm\.field_map\) not found"),
        ('{"0": "a",', r"field map .*map\.json is not valid JSON \(.*line 1"),
        ('["a", "b"]', r"field map .*map\.json holds list; expected a JSON object"),
        ('{"x": "a"}', r"field map .*map\.json has entry 'x': 'a'; keys must be non-negative"),
        ('{"0": 5}', r"has entry '0': 5; keys must be non-negative integers and values"),
    ],
)
def test_bad_field_map(tmp_path: Path, content: str | None, message: str) -> None:
    field_map = tmp_path / "map.json"
    if content is not None:
        field_map.write_text(content, encoding="utf-8")
    path = _write(tmp_path, "1 0:1\n")
    with pytest.raises(DataError, match=message):
        read_libsvm(path, LibsvmOptions(field_map=field_map), label="label", features=[])


def test_fields_required_unless_ffm(tmp_path: Path) -> None:
    path = _write(tmp_path, "1 0:1\n")
    message = r"cannot tell the field of each index in .*f\.libfm: set data\.libsvm\.fields"
    with pytest.raises(DataError, match=message):
        read_libsvm(path, LibsvmOptions(), label="label", features=[])


def test_fields_and_field_map_together(tmp_path: Path) -> None:
    path = _write(tmp_path, "1 0:1\n")
    options = LibsvmOptions(fields=AB_OPTIONS.fields, field_map=tmp_path / "map.json")
    with pytest.raises(ConfigError, match=r"either fields .* or field_map, not both"):
        read_libsvm(path, options, label="label", features=[])


@pytest.mark.parametrize(
    ("ranges", "message"),
    [
        ([("a", 0, 5), ("b", 4, 10)], r"ranges 'a' \[0, 5\) and 'b' \[4, 10\) overlap"),
        ([("a", 5, 5)], r"range 'a' \[5, 5\) is empty; end must be greater than start"),
    ],
)
def test_bad_ranges(tmp_path: Path, ranges: list[tuple[str, int, int]], message: str) -> None:
    path = _write(tmp_path, "1 0:1\n")
    options = LibsvmOptions(fields=[FieldRange(name=n, start=s, end=e) for n, s, e in ranges])
    with pytest.raises(ConfigError, match=message):
        read_libsvm(path, options, label="label", features=[])


def test_several_values_for_a_numeric_field(tmp_path: Path) -> None:
    path = _write(tmp_path, "1 0:1 3:1\n1 3:0.5 4:0.5\n")
    message = r"numeric field 'b' has several indices on line 2 of .*; expected one `idx:val`"
    with pytest.raises(DataError, match=message):
        read_libsvm(path, AB_OPTIONS, label="label", features=[NumericFeature(name="b")])


def test_ffm_field_without_name(tmp_path: Path) -> None:
    path = _write(tmp_path, "1 0:1:1\n0 0:2:1 2:5:1\n")
    options = LibsvmOptions(field_names=["user", "item"])
    message = r"field 2 in token '2:5:1' on line 2 .* has no name: .*field_names lists 2 names"
    with pytest.raises(DataError, match=message):
        read_libsvm(path, options, label="label", features=[], ffm=True)


def test_ffm_duplicate_field_names(tmp_path: Path) -> None:
    path = _write(tmp_path, "1 0:1:1\n")
    options = LibsvmOptions(field_names=["user", "user"])
    with pytest.raises(ConfigError, match="field_names must be unique"):
        read_libsvm(path, options, label="label", features=[], ffm=True)


def test_label_named_like_a_field(tmp_path: Path) -> None:
    path = _write(tmp_path, "1 0:1\n")
    with pytest.raises(ConfigError, match="label column 'a' clashes with a field"):
        read_libsvm(path, AB_OPTIONS, label="a", features=[])


def test_ffm_columns_do_not_depend_on_the_fields_a_file_holds(tmp_path: Path) -> None:
    # A feature on field 3 gets its column (all null) even from a file where field 3 is absent,
    # so a test or scoring file reads with the same columns as train.
    path = _write(tmp_path, "1 0:1:1 1:7:1\n0 1:8:1\n")
    features = [
        CategoricalFeature(name="a", source="f0"),
        CategoricalFeature(name="f3"),
        NumericFeature(name="w", source="f5"),
    ]
    table = read_libsvm(path, LibsvmOptions(), label="label", features=features, ffm=True)
    assert table.columns == ["label", *[f"f{i}" for i in range(6)]]
    assert table["f3"].dtype == pl.String and table["f3"].null_count() == 2
    assert table["f5"].dtype == pl.Float64 and table["f5"].null_count() == 2
    assert table["f1"].to_list() == ["7", "8"]


def test_ffm_file_with_fewer_fields_reads_through_read_file(tmp_path: Path) -> None:
    from finalmlp.data.readers import read_file
    from finalmlp.schema import DataConfig

    train = _write(tmp_path, "1 0:1:1 2:5:1\n0 0:2:1 2:6:1\n", name="train.ffm")
    test = _write(tmp_path, "1 0:1:1\n", name="test.ffm")  # field 2 never occurs here
    config = DataConfig.model_validate(
        {
            "format": "libffm",
            "train": train,
            "features": [
                {"name": "f0", "type": "categorical"},
                {"name": "f2", "type": "categorical"},
            ],
        }
    )
    columns = ["label", "f0", "f2"]
    assert read_file(train, config).columns == read_file(test, config).columns == columns
    assert read_file(test, config)["f2"].to_list() == [None]
