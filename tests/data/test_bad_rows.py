"""data.on_bad_rows: each bad-row case under each policy (error, skip, quarantine).

Every case is a small file with three good rows and one bad line. ``error`` must name the file,
the line and (where there is one) the column; ``skip`` must return exactly the good rows and warn
with the count per reason; ``quarantine`` must also write the bad line, its number, reason,
column and raw text to ``<data file>.bad_rows.csv``. docs/reliability.md lists the outcomes.
"""

from __future__ import annotations

import gzip
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from conftest import reader_config
from finalmlp.data import readers
from finalmlp.data.badrows import BadRowsWarning, quarantine_path
from finalmlp.data.readers import read_file, read_table
from finalmlp.errors import ConfigError, DataError

HEADER = b"label,user,price\n"
GOOD = [b"1,a,1.5", b"0,b,2", b"1,c,3"]
POLICIES = ["error", "skip", "quarantine"]
pytestmark = pytest.mark.filterwarnings("ignore::finalmlp.data.badrows.BadRowsWarning")


@dataclass(frozen=True)
class Case:
    """A bad line put at ``line`` among the good ones (the last line when ``line`` is None)."""

    bad: bytes
    reason: str
    column: str | None
    error: str  # regex the `error` policy's message must match
    line: int | None = 3
    raw: str | None = None  # in the side file; default: the bad line as text

    def body(self) -> bytes:
        lines = list(GOOD)
        if self.line is None:  # truncated last line: no newline after it
            return HEADER + b"\n".join(lines) + b"\n" + self.bad
        lines.insert(self.line - 2, self.bad)
        return HEADER + b"\n".join(lines) + b"\n"

    @property
    def bad_line(self) -> int:
        return self.line if self.line is not None else len(GOOD) + 2


CASES = {
    "long_line": Case(
        b"0,x,2,extra", "field_count", None, r"line 3 of .*data\.csv has 4 fields, expected 3"
    ),
    "short_line": Case(b"0,x", "field_count", None, r"line 3 of .*data\.csv has 2 fields"),
    "blank_line": Case(b"", "blank_line", None, r"line 3 of .*data\.csv is blank, expected 3"),
    "truncated_last_line": Case(
        b"0,x", "field_count", None, r"line 5 of .*data\.csv has 2 fields, expected 3", line=None
    ),
    "unparsable_number": Case(
        b"0,x,abc",
        "not_a_number",
        "price",
        r"column 'price' must be numeric, got 'abc' on line 3 of .*data\.csv",
    ),
    "nan": Case(
        b"0,x,NaN",
        "not_finite",
        "price",
        r"column 'price' must hold finite numbers, got 'NaN' on line 3 of .*data\.csv",
    ),
    "inf": Case(b"0,x,-inf", "not_finite", "price", r"finite numbers, got '-inf' on line 3 of"),
    "overflow": Case(b"0,x,1e999", "not_finite", "price", r"finite numbers, got '1e999' on line 3"),
    "empty_label": Case(
        b",x,2", "empty_label", "label", r"label column 'label' is empty on line 3 of .*data\.csv"
    ),
    "label_not_binary": Case(
        b"2,x,2", "bad_label", "label", r"must hold 0/1 \(or -1/1\), got '2' on line 3 of"
    ),
    "not_utf8": Case(
        b"0,x\xff,2",
        "not_utf8",
        "user",
        r"cannot read line 3 of .*data\.csv as UTF-8: byte 0xff at position 4 in column 'user'",
        raw="0,x\\xff,2",
    ),
    "repeated_header": Case(
        b"label,user,price",
        "repeated_header",
        None,
        r"line 3 of .*data\.csv repeats the header \(were files joined with their headers\?\)",
    ),
}


def _config(path: Path, policy: str, **overrides: Any) -> Any:
    return reader_config(path, on_bad_rows=policy, **overrides)


def _write(tmp_path: Path, data: bytes, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _side_file(path: Path) -> pl.DataFrame:
    return pl.read_csv(path.parent / (path.name + ".bad_rows.csv"), infer_schema=False)


def _read_warning(path: Path, config: Any) -> tuple[pl.DataFrame, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = read_file(path, config)
    return frame, [str(w.message) for w in caught if issubclass(w.category, BadRowsWarning)]


def _check_dropped(path: Path, policy: str, case: Case) -> None:
    frame, messages = _read_warning(path, _config(path, policy))
    assert frame["user"].to_list() == ["a", "b", "c"]
    assert frame["label"].to_list() == [1.0, 0.0, 1.0]
    assert frame["price"].to_list() == [1.5, 2.0, 3.0]
    assert len(messages) == 1
    verb = "quarantined 1 bad row of" if policy == "quarantine" else "skipped 1 bad row in"
    assert messages[0].startswith(f"{verb} {path}")
    side = path.parent / (path.name + ".bad_rows.csv")
    if policy == "skip":
        assert not side.exists()
        return
    rows = _side_file(path).to_dicts()
    raw = case.raw if case.raw is not None else case.bad.decode()
    assert rows == [
        {"line": str(case.bad_line), "reason": case.reason, "column": case.column, "raw": raw}
    ]


# ----------------------------------------------------------------------------- every case
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", list(CASES))
def test_bad_row_case_under_each_policy(tmp_path: Path, name: str, policy: str) -> None:
    case = CASES[name]
    path = _write(tmp_path, case.body())
    if policy == "error":
        with pytest.raises(DataError, match=case.error) as info:
            read_file(path, _config(path, policy))
        assert "set data.on_bad_rows: skip or quarantine" in str(info.value)
    else:
        _check_dropped(path, policy, case)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("codec", ["gzip", "zstd"])
@pytest.mark.parametrize("name", ["data.csv.gz", "data.csv"])  # by magic bytes, not suffix
def test_compressed_input(tmp_path: Path, codec: str, name: str, policy: str) -> None:
    case = CASES["long_line"]
    packed = gzip.compress(case.body()) if codec == "gzip" else pa.compress(
        case.body(), codec="zstd", asbytes=True
    )  # fmt: skip
    path = _write(tmp_path, packed, name.replace(".gz", ".zst") if codec == "zstd" else name)
    if policy == "error":
        with pytest.raises(DataError, match=r"line 3 of .*data\.csv.* has 4 fields, expected 3"):
            read_file(path, _config(path, policy))
    else:
        _check_dropped(path, policy, case)
    clean = _write(tmp_path, gzip.compress(HEADER + b"\n".join(GOOD)), "clean.csv.gz")
    assert read_file(clean, _config(clean, policy))["price"].to_list() == [1.5, 2.0, 3.0]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(
    "data", [b"", gzip.compress(b""), HEADER, gzip.compress(HEADER)], ids=["0b", "gz", "hdr", "hgz"]
)
def test_empty_file_is_an_error_under_every_policy(
    tmp_path: Path, data: bytes, policy: str
) -> None:
    path = _write(tmp_path, data)
    message = r"has no data rows" if HEADER in data or data == gzip.compress(HEADER) else "empty"
    with pytest.raises(DataError, match=message):
        read_file(path, _config(path, policy))


@pytest.mark.parametrize("policy", POLICIES)
def test_label_map(tmp_path: Path, policy: str) -> None:
    path = _write(tmp_path, HEADER + b"yes,a,1\nno,b,2\nmaybe,x,9\n yes ,c,3\n")
    config = _config(path, policy, label_map={"no": 0, "yes": 1})
    if policy == "error":
        message = r"data\.label_map does not map \(it maps \['no', 'yes'\]\): 'maybe' on line 4 of"
        with pytest.raises(DataError, match=message):
            read_file(path, config)
        return
    frame, _ = _read_warning(path, config)
    assert frame["label"].to_list() == [1.0, 0.0, 1.0]
    assert frame["user"].to_list() == ["a", "b", "c"]
    if policy == "quarantine":
        assert _side_file(path)["reason"].to_list() == ["bad_label"]


def test_label_map_of_minus_one_and_yaml_keys(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + b"-1,a,1\n1,b,2\n0,c,3\n")
    config = _config(path, "skip", label_map={-1: 0, 1: 1})  # YAML gives int keys
    frame, messages = _read_warning(path, config)
    assert frame["label"].to_list() == [0.0, 1.0]  # "0" is not in this map
    assert messages == [f"skipped 1 bad row in {path}: label not 0/1 (nor in data.label_map) 1"]
    with pytest.raises(ValueError, match=r"label_map key True was read as a boolean; quote it"):
        _config(path, "skip", label_map={True: 1, False: 0})


# ----------------------------------------------------------------------------- line numbers
def test_several_reasons_are_counted_and_lines_stay_exact(tmp_path: Path) -> None:
    # Lines are left out in three passes (not UTF-8, structure, values): each side-file line
    # number must still be that of the original file.
    body = (
        HEADER
        + b"1,a,1\n"  # 2
        + b"0,\xe9t\xe9,2\n"  # 3 latin-1
        + b"1,b,2,9\n"  # 4 long
        + b"0,c,3\n"  # 5
        + b"label,user,price\n"  # 6 repeated header
        + b"1,d,x\n"  # 7 not a number
        + b"1,e,inf\n"  # 8
        + b"7,f,1\n"  # 9 label
        + b"0,g,5\n"  # 10
    )
    path = _write(tmp_path, body)
    frame, messages = _read_warning(path, _config(path, "quarantine"))
    assert frame["user"].to_list() == ["a", "c", "g"]
    side = _side_file(path)
    assert side["line"].to_list() == ["3", "4", "6", "7", "8", "9"]
    assert side["reason"].to_list() == [
        "not_utf8", "field_count", "repeated_header", "not_a_number", "not_finite", "bad_label"
    ]  # fmt: skip
    assert side["raw"].to_list()[3:] == ["1,d,x", "1,e,inf", "7,f,1"]
    assert messages == [
        f"quarantined 6 bad rows of {path} to {path}.bad_rows.csv: not UTF-8 1, wrong number "
        "of fields 1, repeated header line 1, unparsable number 1, NaN or infinite number 1, "
        "label not 0/1 (nor in data.label_map) 1"
    ]
    report = read_table(path, _config(path, "skip")).bad_rows
    assert report.total == 6 and report.quarantine is None


def test_quoted_fields_spanning_lines(tmp_path: Path) -> None:
    body = HEADER + b'1,"two\nlines",1\n0,b,2,9\n1,"x,\ny",abc\n0,"q\nr",4\n'
    path = _write(tmp_path, body)
    with pytest.raises(DataError, match=r"line 4 of .*data\.csv has 4 fields"):
        read_file(path, _config(path, "error"))
    frame, _ = _read_warning(path, _config(path, "quarantine"))
    assert frame["user"].to_list() == ["two\nlines", "q\nr"]
    side = _side_file(path)
    assert side["line"].to_list() == ["4", "5"]
    assert side["raw"].to_list() == ["0,b,2,9", '1,"x,\ny",abc']
    path.write_bytes(HEADER + b'1,"two\nlines",1\n1,b,nan\n')
    with pytest.raises(DataError, match=r"'nan' on line 4 of"):  # exact, not an estimate
        read_file(path, _config(path, "error"))


def test_crlf_lines_and_a_file_without_header(tmp_path: Path) -> None:
    crlf = _write(tmp_path, b"label,user,price\r\n1,a,1\r\nlabel,user,price\r\n0,b,x\r\n1,c,3\r\n")
    frame, _ = _read_warning(crlf, _config(crlf, "quarantine"))
    assert frame["user"].to_list() == ["a", "c"]
    assert _side_file(crlf).rows() == [
        ("3", "repeated_header", None, "label,user,price"), ("4", "not_a_number", "price", "0,b,x")
    ]  # fmt: skip
    bare = _write(tmp_path, b"1\ta\t1\n0\tb\n1\tc\tinf\n0\td\t4\n", "bare.tsv")
    config = _config(bare, "quarantine", format="tsv", has_header=False,
                     columns=["label", "user", "price"])  # fmt: skip
    frame, _ = _read_warning(bare, config)
    assert frame["user"].to_list() == ["a", "d"]
    assert _side_file(bare)["line"].to_list() == ["2", "3"]


@pytest.mark.parametrize("policy", POLICIES)
def test_header_not_utf8_is_an_error_under_every_policy(tmp_path: Path, policy: str) -> None:
    path = _write(tmp_path, b"label,us\xe9r,price\n1,a,1\n")
    config = _config(path, policy, features=[{"name": "price", "type": "numeric"}])
    with pytest.raises(DataError, match=r"cannot read line 1 of .*data\.csv as UTF-8: byte 0xe9"):
        read_file(path, config)


def test_all_rows_bad_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + b"x,a,1\n1,b\n")
    with pytest.raises(DataError, match=r"no good row is left in .*data\.csv: all 2 rows are"):
        read_file(path, _config(path, "quarantine"))
    assert _side_file(path).height == 2  # written before giving up: it says why


# ----------------------------------------------------------------------------- side file
def test_quarantine_file_is_replaced_atomically_and_can_move(tmp_path: Path) -> None:
    path = _write(tmp_path, CASES["long_line"].body())
    read_file(path, _config(path, "quarantine"))
    path.write_bytes(HEADER + b"\n".join(GOOD) + b"\n")  # fixed: the side file says so
    assert read_file(path, _config(path, "quarantine")).height == 3
    assert _side_file(path).columns == ["line", "reason", "column", "raw"]
    assert _side_file(path).height == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv", "data.csv.bad_rows.csv"]
    elsewhere = tmp_path / "bad"
    path.write_bytes(CASES["short_line"].body())
    read_file(path, _config(path, "quarantine", quarantine_dir=elsewhere))
    assert pl.read_csv(elsewhere / "data.csv.bad_rows.csv")["line"].to_list() == [3]


def test_quarantine_never_overwrites_a_data_file(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + b"1,a,1\n")
    valid = _write(tmp_path, HEADER + b"1,a,1\n", "data.csv.bad_rows.csv")
    config = _config(path, "quarantine", valid=valid)
    with pytest.raises(ConfigError, match=r"quarantine file .* would overwrite a data file"):
        quarantine_path(path, config)
    with pytest.raises(ConfigError, match="would overwrite a data file"):
        read_file(path, config)
    assert valid.read_bytes() == HEADER + b"1,a,1\n"


# ----------------------------------------------------------------------------- scoring, fast path
def test_scoring_stops_at_bad_lines_and_keeps_nan(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + b"1,a,nan\n0,b,2,9\n")
    config = _config(path, "skip")
    with pytest.raises(DataError, match=r"line 3 of .* has 4 fields") as info:
        read_file(path, config, require_label=False)
    assert "on_bad_rows" not in str(info.value)  # scoring never drops rows
    path.write_bytes(HEADER + b"1,a,nan\n0,b,inf\n")
    assert read_file(path, config, require_label=False)["price"].to_list()[1] == float("inf")


def test_clean_file_is_not_copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_copy(*args: Any) -> None:
        raise AssertionError("a clean file must be read in place")

    monkeypatch.setattr(readers, "copy_without_lines", no_copy)
    monkeypatch.setattr(readers, "copy_valid_utf8", no_copy)
    path = _write(tmp_path, HEADER + b"\n".join(GOOD) + b"\n")
    result = read_table(path, _config(path, "quarantine"))
    assert result.frame.height == 3 and result.bad_rows.total == 0


# ----------------------------------------------------------------------------- Parquet, libsvm
@pytest.mark.parametrize("policy", POLICIES)
def test_parquet_bad_values(tmp_path: Path, policy: str) -> None:
    path = tmp_path / "data.parquet"
    pl.DataFrame(
        {
            "label": [1, 0, 2, 1, None],
            "user": ["a", "b", "x", "c", "y"],
            "price": [1.0, float("nan"), 3.0, 4.0, 5.0],
        }
    ).write_parquet(path)
    config = _config(path, policy, format="parquet")
    if policy == "error":
        with pytest.raises(
            DataError,
            match=r"'price' must hold finite numbers, got nan on row 2 of .*data\.parquet",
        ):
            read_file(path, config)
        return
    frame, _ = _read_warning(path, config)
    assert frame["user"].to_list() == ["a", "c"]
    if policy == "quarantine":
        side = _side_file(path)
        assert side["line"].to_list() == ["2", "3", "5"]  # row numbers
        assert side["reason"].to_list() == ["not_finite", "bad_label", "empty_label"]
        assert side["raw"][1] == '{"label": 2, "user": "x", "price": 3.0}'


def test_parquet_labels_of_other_dtypes(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    table = {"user": ["a", "b", "c"], "price": [1.0, 2.0, 3.0]}
    pl.DataFrame({"label": [True, False, True], **table}).write_parquet(path)
    assert read_file(path, _config(path, "error", format="parquet"))["label"].to_list() == [
        1.0, 0.0, 1.0
    ]  # fmt: skip
    pl.DataFrame({"label": [1.0, -1.0, 0.5], **table}).write_parquet(path)
    config = _config(path, "skip", format="parquet", label_map={"1": 1, "-1": 0})
    frame, _ = _read_warning(path, config)  # whole floats match the keys without ".0"
    assert frame["label"].to_list() == [1.0, 0.0]
    with pytest.raises(ValueError, match=r"data\.label_map is empty"):
        _config(path, "skip", label_map={})


LIBSVM_CASES = {
    "bad_label": (b"5 0:1 3:1", "bad_label", r"label '5' on line 2 of .*f\.libfm is not a binary"),
    "bad_token": (b"1 0:1 oops", "bad_token", r"token 'oops' on line 2 .* is not `idx:val`"),
    "not_a_number": (b"1 0:x", "not_a_number", r"token '0:x' on line 2 .* does not hold numbers"),
    "unknown_index": (b"1 0:1 99:1", "unknown_field", r"index 99 on line 2 .* in no field range"),
    "not_utf8": (b"1 0:1 3:\xff", "not_utf8", r"cannot read line 2 of .*f\.libfm as UTF-8"),
    "repeated_numeric": (b"1 3:1 4:2", "repeated_field", r"numeric field 'b' has several"),
    "nan_value": (
        b"1 0:1 3:nan",
        "not_finite",
        r"column 'b' must hold finite numbers, got nan on line 2 of .*f\.libfm",
    ),
}


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", list(LIBSVM_CASES))
@pytest.mark.parametrize("compress", [False, True])
def test_libsvm_bad_lines(tmp_path: Path, name: str, policy: str, compress: bool) -> None:
    bad, reason, error = LIBSVM_CASES[name]
    data = b"1 0:1 3:0.5\n" + bad + b"\n\n-1 1:1 4:1.5\n"
    path = _write(tmp_path, gzip.compress(data) if compress else data, "f.libfm")
    config = _config(
        path,
        policy,
        format="libsvm",
        features=[{"name": "a", "type": "categorical"}, {"name": "b", "type": "numeric"}],
        libsvm={
            "fields": [{"name": "a", "start": 0, "end": 3}, {"name": "b", "start": 3, "end": 9}]
        },
    )
    if policy == "error":
        with pytest.raises(DataError, match=error):
            read_file(path, config)
        return
    frame, messages = _read_warning(path, config)
    assert frame.rows() == [(1.0, "0", 0.5), (0.0, "1", 1.5)]
    assert len(messages) == 1
    if policy == "quarantine":
        rows = _side_file(path).to_dicts()
        raw = bad.decode("utf-8", errors="backslashreplace")
        column = "b" if reason == "not_finite" else None
        assert rows == [{"line": "2", "reason": reason, "column": column, "raw": raw}]


def test_libsvm_label_map(tmp_path: Path) -> None:
    path = _write(tmp_path, b"+1 0:1\nno 1:1\nyes 2:1\n", "f.libfm")
    config = _config(
        path,
        "skip",
        format="libsvm",
        label_map={"yes": 1, "no": 0},
        features=[{"name": "a", "type": "categorical"}],
        libsvm={"fields": [{"name": "a", "start": 0, "end": 3}]},
    )
    frame, messages = _read_warning(path, config)
    assert frame.rows() == [(0.0, "1"), (1.0, "2")]
    assert "skipped 1 bad row" in messages[0]


# ----------------------------------------------------------------------------- LineMap
def test_line_map_matches_a_naive_copy() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        total = int(rng.integers(1, 60))
        removed = np.sort(
            rng.choice(np.arange(1, total + 1), size=rng.integers(0, total), replace=False)
        )
        kept = np.setdiff1d(np.arange(1, total + 1), removed)
        line_map = readers.LineMap(removed.astype(np.int64))
        np.testing.assert_array_equal(line_map.original(np.arange(1, len(kept) + 1)), kept)
