"""A carriage return inside a line (not before its newline) is part of its field, as in Polars.

Python's csv module stops at such a ``\\r`` with ``csv.Error: new-line character seen in unquoted
field``; the fuzz run of docs/reliability.md found 6 of 500 random files ending in that traceback
(a stray ``\\r`` in the header line), and files whose quoted fields span lines were refused with a
"fix the quoting" message. Every reader here must treat the ``\\r`` as text, like Polars does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import reader_config
from finalmlp.data.csvlines import scan_records, split_fields
from finalmlp.data.headers import first_fields
from finalmlp.data.readers import read_file
from finalmlp.errors import DataError, FinalMLPError


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "data.csv"
    path.write_bytes(data)
    return path


def test_split_fields_keeps_a_carriage_return_in_its_field() -> None:
    assert split_fields("a,b\rc,d", ",") == ["a", "b\rc", "d"]
    assert split_fields('"x\r",y\r\rz', ",") == ["x\r", "y\r\rz"]
    assert split_fields('a,"b,c"', ",") == ["a", "b,c"]  # quoting as before


def test_header_with_a_carriage_return_in_a_column_not_read(tmp_path: Path) -> None:
    path = _write(tmp_path, b"label,user,price,no\rte\n1,u1,2,x\n0,u2,3,y\n")
    assert first_fields(path, ",") == ["label", "user", "price", "no\rte"]
    frame = read_file(path, reader_config(path))
    assert frame["user"].to_list() == ["u1", "u2"]


def test_header_with_a_carriage_return_in_a_read_column_is_a_one_line_error(
    tmp_path: Path,
) -> None:
    path = _write(tmp_path, b"label,us\rer,price\n1,u1,2\n")
    with pytest.raises(FinalMLPError) as info:  # a SchemaError: column 'user' not found
        read_file(path, reader_config(path))
    message = str(info.value)
    assert str(path) in message and "['user']" in message and "'us\\rer'" in message
    assert "\n" not in message and "\r" not in message


def test_data_field_with_a_carriage_return_reads_as_text(tmp_path: Path) -> None:
    path = _write(tmp_path, b"label,user,price\n1,u\r1,2\n0,u2,3\n")
    assert read_file(path, reader_config(path))["user"].to_list() == ["u\r1", "u2"]


def test_carriage_return_beside_a_quoted_field_spanning_lines(tmp_path: Path) -> None:
    # The quoted field spanning lines sends the check to Python's csv module, which used to
    # refuse line 2 with "new-line character seen in unquoted field ...; fix the quoting".
    path = _write(tmp_path, b'label,user,price\n1,u\r1,2\n0,"a\nb",3\n1,c,4\r\n')
    frame = read_file(path, reader_config(path))
    assert frame["user"].to_list() == ["u\r1", "a\nb", "c"]
    assert frame["price"].to_list() == [2.0, 3.0, 4.0]
    assert scan_records(path, ",", 3, True).records.tolist() == [[2, 2], [3, 4], [5, 5]]


def test_carriage_return_in_a_bad_line_beside_a_quoted_field(tmp_path: Path) -> None:
    path = _write(tmp_path, b'label,user,price\n1,u\r1,2,9\n0,"a\nb",3\n')
    with pytest.raises(DataError, match=r"line 2 of .*data\.csv has 4 fields, expected 3"):
        read_file(path, reader_config(path))


@pytest.mark.parametrize(
    "data",
    [  # two of the fuzz run's files (benchmarks/fuzz_inputs.py, seed 7)
        b"label,user,item,daytime,weekday,isweeken(\x1b\xc1E\r!8cC\xfb\x93Tq!\xb3\x81Q\xa5"
        b"\x8c\xe9I\x82\xf5j\x86y\xa3\xbe\x12e]\xced,homework,cost,weather,country,city\n",
        b"label,user,item,daytime,weekday,isweekend,homework,cost,weather\rD\n|-r]U4\x9f\x80"
        b"\x0f\t1c\x85\t\xedz\xe34\xb30[\x17\x8b?\xee,country,city\n",
    ],
)
def test_fuzzed_files_with_a_carriage_return_end_in_one_line_errors(
    tmp_path: Path, data: bytes
) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(FinalMLPError) as info:  # was csv.Error, a traceback for the user
        read_file(path, reader_config(path))
    message = str(info.value)
    assert str(path) in message and "\n" not in message and "\r" not in message
