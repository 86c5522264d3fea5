"""Tests for finalmlp.features.infer: proposing a data config from a raw file."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from finalmlp.config import parse_config
from finalmlp.errors import ConfigError, DataError, SchemaError
from finalmlp.features import infer
from finalmlp.features.infer import (
    InferredSchema,
    column_stats,
    infer_data_config,
    infer_schema,
    render_yaml,
    sniff_separator,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
FRAPPE_FIELDS = [
    "user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country",
    "city",
]  # fmt: skip


# ----------------------------------------------------------------------------- helpers
def real_file(relative: str) -> Path:
    """A file under ../shared/data; the test skips when the licensed data is absent."""
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"real data file {path} is absent (licensed data is not shipped)")
    return path


def write_csv(path: Path, columns: dict[str, list[Any]], separator: str = ",") -> Path:
    """Write columns (name -> values, None for empty) as a text file with a header."""
    names = list(columns)
    rows = zip(*columns.values(), strict=True)
    lines = [separator.join(names)]
    lines += [separator.join("" if v is None else str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def labels(n: int) -> list[int]:
    return [i % 2 for i in range(n)]


def features_by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in data["features"]}


def check_valid(result: InferredSchema) -> None:
    """The dict and its rendered YAML both validate as a config."""
    parse_config({"data": result.data})
    text = result.to_yaml()
    loaded = yaml.safe_load(text)
    assert loaded["data"] == result.data
    config = parse_config(loaded)
    assert config.model.name == "finalmlp"
    assert config.model.embedding_dim == 10


# ----------------------------------------------------------------------------- real files
def test_frappe_is_ten_categorical_fields() -> None:
    path = real_file("frappe_x1/train.csv")
    result = infer_schema(path, sample_rows=50_000)
    check_valid(result)
    data = result.data
    assert data["format"] == "csv"
    assert data["has_header"] is True
    assert data["train"] == str(path.resolve())  # absolute: valid wherever the YAML goes
    assert data["label"] == "label"
    assert "separator" not in data and "columns" not in data
    assert [f["name"] for f in data["features"]] == FRAPPE_FIELDS
    assert {f["type"] for f in data["features"]} == {"categorical"}


def test_taobao_numeric_price_and_caret_sequence() -> None:
    result = infer_schema(real_file("taobao_ad_tiny/train_sample.csv"))
    check_valid(result)
    features = features_by_name(result.data)
    assert result.data["label"] == "clk"
    assert features["price"]["type"] == "numeric"
    assert features["click_sequence"]["type"] == "sequence"
    assert features["click_sequence"]["separator"] == "^"
    assert features["click_sequence"]["max_len"] >= 1
    assert features["userid"]["type"] == "categorical"
    assert "new_user_class_level" not in features  # always empty
    assert "dropped" in result.stats["new_user_class_level"]["note"]


def test_movielens_genres_sequence_with_a_given_rating_label() -> None:
    result = infer_schema(real_file("movielens_sample/movielens_sample.txt"), label="rating")
    check_valid(result)
    features = features_by_name(result.data)
    assert result.data["label"] == "rating"
    assert "rating" not in features
    assert features["genres"] == {
        "name": "genres",
        "type": "sequence",
        "separator": "|",
        "max_len": features["genres"]["max_len"],
    }
    assert features["gender"]["type"] == "categorical"
    assert features["zip"]["type"] == "categorical"
    assert "NOT 0/1" in result.stats["rating"]["note"]
    assert "# label rating" in result.to_yaml()


def test_criteo_small_is_headerless_tsv_with_forty_columns() -> None:
    result = infer_schema(real_file("criteo_small/train.csv"))
    check_valid(result)
    data = result.data
    assert data["format"] == "tsv"
    assert data["has_header"] is False
    assert data["columns"] == [f"c{i}" for i in range(40)]
    assert "separator" not in data
    assert data["label"] == "c0"
    assert len(data["features"]) == 39
    assert any("recipe: criteo" in note for note in result.notes)
    assert "recipe: criteo" in result.to_yaml()


def test_avazu_click_label_and_id_dropped() -> None:
    result = infer_schema(real_file("avazu_sample/avazu_sample.txt"))
    check_valid(result)
    features = features_by_name(result.data)
    assert result.data["label"] == "click"
    assert "id" not in features
    assert "row id" in result.stats["id"]["note"]
    assert "site_id" in features
    assert "# dropped id" in result.to_yaml()


# ----------------------------------------------------------------------------- column rules
def test_column_kinds(tmp_path: Path) -> None:
    rng = random.Random(0)
    n = 200
    path = write_csv(
        tmp_path / "kinds.csv",
        {
            "label": labels(n),
            "score": [round(rng.gauss(5.0, 2.0), 3) for _ in range(n)],
            "clicks": [int(rng.paretovariate(0.7)) for _ in range(n - 1)] + [10**7],
            "delta": [rng.randint(-50, 50) for _ in range(n)],
            "level": [rng.randint(1, 5) for _ in range(n)],
            "shop": [rng.randint(5_000, 9_000) for _ in range(n)],
            "account_id": [rng.randint(1, 30) * 7919 for _ in range(n)],
            "zipcode": [f"{rng.randint(0, 999):05d}" for _ in range(n)],
            "city": [rng.choice(["paris", "oslo", "rome"]) for _ in range(n)],
        },
    )
    result = infer_schema(path)
    check_valid(result)
    f = features_by_name(result.data)
    assert f["score"] == {"name": "score", "type": "numeric", "transform": "standard"}
    assert f["clicks"] == {"name": "clicks", "type": "numeric", "transform": "log"}
    assert f["delta"]["transform"] == "standard"  # negative values: no log
    assert f["level"]["type"] == "categorical"  # few distinct integers
    assert f["shop"]["type"] == "categorical"  # integers spread evenly, like ids
    assert f["account_id"]["type"] == "categorical"  # named like an id
    assert f["zipcode"]["type"] == "categorical"  # leading zeros
    assert f["city"] == {"name": "city", "type": "categorical", "min_count": 1}


def test_mostly_numeric_column_is_numeric_with_a_warning(tmp_path: Path) -> None:
    values: list[Any] = [float(i) + 0.5 for i in range(199)] + ["n/a"]
    path = write_csv(tmp_path / "f.csv", {"label": labels(200), "amount": values})
    result = infer_schema(path)
    assert features_by_name(result.data)["amount"]["type"] == "numeric"
    assert "'n/a'" in result.stats["amount"]["note"]


def test_sequence_separator_and_max_len(tmp_path: Path) -> None:
    rng = random.Random(1)
    tags = ["a", "b", "c", "d", "e"]
    values = [";".join(rng.sample(tags, 1 + i % 4)) for i in range(100)]
    path = write_csv(tmp_path / "seq.csv", {"label": labels(100), "tags": values})
    result = infer_schema(path)
    check_valid(result)
    tags_feature = features_by_name(result.data)["tags"]
    assert tags_feature == {"name": "tags", "type": "sequence", "separator": ";", "max_len": 4}


def test_sequence_needs_tokens_that_repeat(tmp_path: Path) -> None:
    values = [f"x{i}|y{i}" for i in range(50)] + ["z1", "z2"] * 25  # only z1, z2 repeat
    path = write_csv(tmp_path / "once.csv", {"label": labels(100), "pair": values})
    assert features_by_name(infer_data_config(path))["pair"]["type"] == "categorical"


def test_sequence_ignores_rarely_separated_values(tmp_path: Path) -> None:
    values = ["a^b" if i % 10 == 0 else "ab"[i % 2] for i in range(100)]  # 10% hold '^'
    path = write_csv(tmp_path / "rare.csv", {"label": labels(100), "v": values})
    assert features_by_name(infer_data_config(path))["v"]["type"] == "categorical"


def test_min_count_two_when_most_values_are_singletons(tmp_path: Path) -> None:
    many = [f"u{i}" for i in range(80)] + ["u0"] * 20
    few = ["a", "b", "c", "d"] * 25
    path = write_csv(tmp_path / "mc.csv", {"label": labels(100), "many": many, "few": few})
    f = features_by_name(infer_data_config(path))
    assert f["many"]["min_count"] == 2
    assert f["few"]["min_count"] == 1


def test_hash_buckets_suggested_for_huge_vocabularies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(infer, "HASH_SUGGEST_DISTINCT", 10)
    path = write_csv(
        tmp_path / "h.csv", {"label": labels(100), "v": [f"v{i % 50}" for i in range(100)]}
    )
    result = infer_schema(path)
    assert "hash_buckets" not in features_by_name(result.data)["v"]  # only suggested
    assert f"hash_buckets: {2**20}" in result.stats["v"]["note"]
    assert "hash_buckets" in result.to_yaml()


def test_constant_empty_and_row_id_columns_are_dropped(tmp_path: Path) -> None:
    n = 50
    path = write_csv(
        tmp_path / "drop.csv",
        {
            "label": labels(n),
            "const": ["same"] * n,
            "blank": [None] * n,
            "row": [f"r{i:04d}" for i in range(n)],
            "keep": ["p", "q"] * (n // 2),
            "sometimes": ["x" if i % 2 else None for i in range(n)],
        },
    )
    result = infer_schema(path)
    check_valid(result)
    assert [f["name"] for f in result.data["features"]] == ["keep", "sometimes"]
    assert "constant" in result.stats["const"]["note"]
    assert "empty" in result.stats["blank"]["note"]
    assert "row id" in result.stats["row"]["note"]
    text = result.to_yaml()
    for column in ("const", "blank", "row"):
        assert f"# dropped {column}:" in text


def test_nothing_usable_is_an_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "bare.csv", {"label": labels(30), "const": ["k"] * 30})
    with pytest.raises(SchemaError, match=r"no column of .* is usable as a feature"):
        infer_data_config(path)


# ----------------------------------------------------------------------------- label
def test_label_found_by_name_case_insensitively(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "l.csv", {"city": ["a", "b"] * 20, "Is_Click": labels(40)})
    assert infer_data_config(path)["label"] == "Is_Click"


def test_label_is_a_binary_first_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "l.csv", {"outcome": labels(40), "city": ["a", "b"] * 20})
    result = infer_schema(path)
    assert result.data["label"] == "outcome"
    assert "first column" in result.stats["outcome"]["note"]


def test_no_label_is_an_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "l.csv", {"city": ["a", "b"] * 20, "score": list(range(40))})
    with pytest.raises(SchemaError, match=r"cannot tell the label .*\['city', 'score'\].*--label"):
        infer_data_config(path)


def test_given_label_must_exist(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "l.csv", {"label": labels(40), "city": ["a", "b"] * 20})
    with pytest.raises(
        SchemaError, match=r"label column 'clicked' not found .*\['label', 'city'\]"
    ):
        infer_data_config(path, label="clicked")


def test_given_label_is_accepted_whatever_its_values(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "l.csv", {"stars": [1, 2, 3, 4, 5] * 8, "city": ["a", "b"] * 20})
    result = infer_schema(path, label="stars")
    check_valid(result)
    assert result.data["label"] == "stars"
    assert "NOT 0/1" in result.stats["stars"]["note"]


# ----------------------------------------------------------------------------- layout
def test_headerless_file_gets_positional_names(tmp_path: Path) -> None:
    rows = [f"{i % 2},{i % 7},tok{i % 3}" for i in range(60)]
    path = tmp_path / "raw.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = infer_schema(path)
    check_valid(result)
    assert result.data["has_header"] is False
    assert result.data["columns"] == ["c0", "c1", "c2"]
    assert result.data["label"] == "c0"
    assert not any("criteo" in note for note in result.notes)


def test_header_of_text_columns_is_detected(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", {"click": ["yes", "no"] * 20, "city": ["a", "b"] * 20})
    result = infer_schema(path, label="click")
    assert result.data["has_header"] is True
    assert any("guessed" in note for note in result.notes)


def test_explicit_has_header_false_is_respected(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", {"label": labels(40), "city": ["a", "b"] * 20})
    data = infer_data_config(path, has_header=False, label="c0")
    assert data["has_header"] is False
    assert data["columns"] == ["c0", "c1"]  # the header line is now a row of data


@pytest.mark.parametrize(
    ("name", "separator", "fmt", "expected_separator"),
    [
        ("semi.csv", ";", "csv", ";"),
        ("pipe.txt", "|", "csv", "|"),
        ("tabs.txt", "\t", "tsv", None),
        ("tabs.tsv", "\t", "tsv", None),
        ("comma.txt", ",", "csv", None),
    ],
)
def test_separator_and_format_are_sniffed(
    tmp_path: Path, name: str, separator: str, fmt: str, expected_separator: str | None
) -> None:
    columns = {"label": labels(40), "city": ["a", "b"] * 20, "n": list(range(40))}
    path = write_csv(tmp_path / name, columns, separator=separator)
    result = infer_schema(path)
    check_valid(result)
    assert result.data["format"] == fmt
    assert result.data.get("separator") == expected_separator


def test_sniff_prefers_a_separator_consistent_across_lines(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text('a;b;c\n1;"x,y,z,w";2\n3;4;5\n', encoding="utf-8")
    assert sniff_separator(path) == ";"


def test_explicit_separator_on_a_csv(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "s.csv", {"label": labels(40), "v": ["a", "b"] * 20}, "|")
    data = infer_data_config(path, fmt="csv", separator="|")
    assert data["format"] == "csv"
    assert data["separator"] == "|"


def test_parquet(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pl.DataFrame(
        {"click": labels(60), "price": [i * 1.5 for i in range(60)], "tags": [["a"]] * 60}
    ).write_parquet(path)
    result = infer_schema(path)
    check_valid(result)
    assert result.data["format"] == "parquet"
    assert "has_header" not in result.data
    assert features_by_name(result.data)["price"]["type"] == "numeric"
    assert any("nested columns skipped: ['tags']" in note for note in result.notes)


def test_sample_rows_limits_the_read(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "big.csv", {"label": labels(500), "v": ["a", "b"] * 250})
    result = infer_schema(path, sample_rows=100)
    assert any("100 rows x 2 columns sampled (the first rows only" in n for n in result.notes)


@pytest.mark.parametrize(
    ("setup", "kwargs", "error", "match"),
    [
        ("missing", {}, DataError, "not found"),
        ("empty", {}, DataError, "is empty"),
        ("header", {}, DataError, "has no data rows"),
        ("ok", {"fmt": "xml"}, ConfigError, "expected csv, tsv, parquet, libsvm or libffm"),
        ("ok", {"sample_rows": 0}, ConfigError, "sample_rows must be at least 1"),
        ("ragged", {}, DataError, "cannot read .* separator ','"),
    ],
)
def test_errors(
    tmp_path: Path, setup: str, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    path = tmp_path / "f.csv"
    contents = {
        "empty": "",
        "header": "label,city\n",
        "ok": "label,city\n0,a\n1,b\n",
        "ragged": "label,city\n0,a\n1,b,c,d\n",
    }
    if setup in contents:
        path.write_text(contents[setup], encoding="utf-8")
    with pytest.raises(error, match=match):
        infer_data_config(path, **kwargs)


# ----------------------------------------------------------------------------- stats, YAML
def test_column_stats() -> None:
    frame = pl.DataFrame({"a": ["x", "y", "x", None, " "], "b": ["1", "1", "1", "1", "1"]})
    stats = column_stats(frame)
    assert stats["a"] == {"distinct": 2, "null_fraction": 0.4, "examples": ["x", "y"]}
    assert stats["b"] == {"distinct": 1, "null_fraction": 0.0, "examples": ["1"]}


def test_render_yaml_round_trips_awkward_names_and_values() -> None:
    data = {
        "format": "tsv",
        "train": "data/my file #1.tsv",
        "has_header": False,
        "columns": ["yes", "a: b", "#x", "null"],
        "label": "yes",
        "features": [
            {"name": "a: b", "type": "categorical", "min_count": 2},
            {"name": "#x", "type": "sequence", "separator": "|", "max_len": 3},
            {"name": "null", "type": "numeric", "transform": "log"},
        ],
    }
    stats = {
        "a: b": {"distinct": 3, "null_fraction": 0.0, "examples": ["line\nbreak", "'q'"]},
        "gone": {"distinct": 1, "null_fraction": 0.0, "examples": ["k"], "note": "constant"},
    }
    text = render_yaml(data, stats, notes=["first note", "two\nlines"])
    loaded = yaml.safe_load(text)
    assert loaded["data"] == data
    parse_config(loaded)
    assert "# a: b: 3 distinct, 0.0% empty, e.g. 'line\\nbreak'" in text
    assert "# dropped gone: 1 distinct" in text
    assert "# two lines" in text
    assert "- {name: 'a: b', type: categorical, min_count: 2}" in text


def test_render_yaml_without_stats() -> None:
    data = {"format": "csv", "train": "t.csv", "label": "y", "features": [{"name": "c"}]}
    text = render_yaml(data)
    assert yaml.safe_load(text) == {
        "data": data,
        "model": {"name": "finalmlp", "embedding_dim": 10},
        "train": {"batch_size": 4096, "patience": 2},
    }
