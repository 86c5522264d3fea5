"""libsvm fields: several indices of one field on a line (never silently joined) and the
featindex.txt field map."""

from __future__ import annotations

from pathlib import Path

import pytest

from finalmlp.data.libsvm import read_libsvm
from finalmlp.data.readers import read_table
from finalmlp.errors import DataError
from finalmlp.schema import (
    CategoricalFeature,
    DataConfig,
    FieldRange,
    LibsvmOptions,
    NumericFeature,
    SequenceFeature,
)

AB_FIELDS = [FieldRange(name="a", start=0, end=3), FieldRange(name="b", start=3, end=10)]
AB_OPTIONS = LibsvmOptions(fields=AB_FIELDS)
FEATURES = [CategoricalFeature(name="a"), CategoricalFeature(name="b")]


def _write(tmp_path: Path, text: str, name: str = "f.libfm") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- multi-valued
def test_several_indices_of_a_categorical_field_are_an_error(tmp_path: Path) -> None:
    # Joined into one token ("5^4"), each such line was a value never seen again: the model
    # learned nothing from the field, and nothing said so.
    path = _write(tmp_path, "1 2:1 5:1\n0 1:1 5:1 4:1\n")
    message = (
        r"field 'b' has several indices on line 2 of .*f\.libfm \(5:1, 4:1\), but its feature "
        r"is categorical .* `type: sequence` .* data\.libsvm\.multi_valued: first"
    )
    with pytest.raises(DataError, match=message):
        read_libsvm(path, AB_OPTIONS, label="label", features=FEATURES)


@pytest.mark.parametrize(("policy", "expected"), [("first", "5"), ("last", "4")])
def test_multi_valued_policy_keeps_one_index(tmp_path: Path, policy: str, expected: str) -> None:
    path = _write(tmp_path, "1 2:1 5:1\n0 1:1 5:1 0:1 4:1\n")
    options = LibsvmOptions(fields=AB_FIELDS, multi_valued=policy)  # type: ignore[arg-type]
    table = read_libsvm(path, options, label="label", features=FEATURES)
    assert table["b"].to_list() == ["5", expected]
    assert table["a"].to_list() == ["2", "1" if policy == "first" else "0"]


def test_multi_valued_policy_applies_to_numeric_fields(tmp_path: Path) -> None:
    path = _write(tmp_path, "1 3:0.5 4:2\n")
    options = LibsvmOptions(fields=AB_FIELDS, multi_valued="last")
    table = read_libsvm(path, options, label="label", features=[NumericFeature(name="b")])
    assert table["b"].to_list() == [2.0]


def test_sequence_feature_takes_every_index_whatever_the_policy(tmp_path: Path) -> None:
    path = _write(tmp_path, "1 2:1 5:1 4:1\n")
    options = LibsvmOptions(fields=AB_FIELDS, multi_valued="first")
    features = [CategoricalFeature(name="a"), SequenceFeature(name="b")]
    table = read_libsvm(path, options, label="label", features=features)
    assert table["b"].to_list() == ["5^4"]


def test_lines_with_several_indices_are_bad_rows_under_skip(tmp_path: Path) -> None:
    path = _write(tmp_path, "1 2:1 5:1\n0 1:1 5:1 4:1\n1 0:1 6:1\n")
    config = DataConfig.model_validate(
        {
            "format": "libsvm",
            "train": path,
            "on_bad_rows": "skip",
            "libsvm": AB_OPTIONS.model_dump(),
            "features": [{"name": n, "type": "categorical"} for n in "ab"],
        }
    )
    with pytest.warns(UserWarning, match="several indices of a single-valued field 1"):
        result = read_table(path, config)
    assert result.frame["b"].to_list() == ["5", "6"]


def test_criteo_libffm_multi_valued_fields_need_a_sequence(shared_data: Path) -> None:
    path = shared_data / "criteo_libffm_sample" / "small_train.txt"
    features = [CategoricalFeature(name="f16"), CategoricalFeature(name="f17")]
    with pytest.raises(DataError, match=r"field 'f1[67]' has several indices on line \d+"):
        read_libsvm(path, LibsvmOptions(), label="label", features=features, ffm=True)
    sequences = [SequenceFeature(name="f16"), SequenceFeature(name="f17")]
    table = read_libsvm(path, LibsvmOptions(), label="label", features=sequences, ffm=True)
    assert table["f17"].str.contains("^", literal=True).sum() == 20


# ----------------------------------------------------------------------------- featindex
def test_featindex_field_map(tmp_path: Path) -> None:
    featindex = _write(
        tmp_path,
        "truncate\t0\nuser:u1\t1\nuser:u2\t2\nurl:http://x.io/a b\t3\n\nurl:other\t4\n",
        "featindex.txt",
    )
    path = _write(tmp_path, "1 0:1 2:1 3:1\n0 1:1 4:1\n")
    options = LibsvmOptions(field_map=featindex)
    table = read_libsvm(path, options, label="label", features=[])
    assert table.columns == ["label", "truncate", "user", "url"]
    assert table.to_dicts() == [
        {"label": 1.0, "truncate": "0", "user": "2", "url": "3"},
        {"label": 0.0, "truncate": None, "user": "1", "url": "4"},
    ]


def test_featindex_gives_the_same_table_as_ranges(shared_data: Path, tmp_path: Path) -> None:
    starts = [0, 957, 5039, 5046, 5053, 5055, 5058, 5060, 5069, 5149, 5382]
    names = ["user", "item", "daytime", "weekday", "isweekend"]
    names += ["homework", "cost", "weather", "country", "city"]
    lines = [
        f"{name}:v{idx}\t{idx}"
        for name, start, end in zip(names, starts, starts[1:], strict=False)
        for idx in range(start, end)
    ]
    featindex = _write(tmp_path, "\n".join(lines) + "\n", "featindex.txt")
    ranges = LibsvmOptions(
        fields=[
            FieldRange(name=n, start=s, end=e)
            for n, s, e in zip(names, starts, starts[1:], strict=False)
        ]
    )
    path = shared_data / "frappe" / "frappe.test.libfm"
    by_featindex = read_libsvm(path, LibsvmOptions(field_map=featindex), label="y", features=[])
    assert by_featindex.equals(read_libsvm(path, ranges, label="y", features=[]))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("user:1\t0\nuser:2\n", r"line 2 of field map .*featindex\.txt is 'user:2'; expected"),
        ("user:1\t0\nitem:1\t0\n", r"gives index 0 to fields \['user', 'item'\] \(lines \[1, 2\]"),
        ("\n\n", r"field map .*featindex\.txt holds no entry"),
    ],
)
def test_bad_featindex(tmp_path: Path, content: str, message: str) -> None:
    featindex = _write(tmp_path, content, "featindex.txt")
    path = _write(tmp_path, "1 0:1\n")
    with pytest.raises(DataError, match=message):
        read_libsvm(path, LibsvmOptions(field_map=featindex), label="label", features=[])


def test_a_header_line_in_a_libsvm_file_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "click features\n1 0:1 3:1\n")
    message = r"label 'click' on line 1 .* is not a number \(line 1 looks like a header: libsvm"
    with pytest.raises(DataError, match=message):
        read_libsvm(path, AB_OPTIONS, label="label", features=FEATURES)
