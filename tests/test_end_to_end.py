"""Raw file -> train -> run directory -> evaluate / predict, on small real samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from finalmlp.config import parse_config
from finalmlp.predict import evaluate_run, predict_file
from finalmlp.train.run import train_from_config

TINY_MODEL = {
    "name": "finalmlp",
    "embedding_dim": 4,
    "mlp1": {"hidden_units": [32], "batch_norm": True},
    "mlp2": {"hidden_units": [16], "batch_norm": True},
    "fs_hidden_units": [16],
    "num_heads": 4,
}
TINY_TRAIN = {"batch_size": 64, "max_epochs": 2, "progress": False, "seed": 7}


def run_and_score(config: dict, tmp_path: Path, score_file: Path) -> tuple[dict, np.ndarray]:
    config["data"]["cache_dir"] = str(tmp_path / "cache")
    cfg = parse_config(config)
    metrics = train_from_config(cfg, tmp_path / "run")
    for name in ("manifest.json", "config.json", "processor.json", "model.safetensors"):
        assert (tmp_path / "run" / name).is_file()
    rows = predict_file(tmp_path / "run", score_file, tmp_path / "scores.csv")
    scores = pl.read_csv(tmp_path / "scores.csv")["score"].to_numpy()
    assert rows == len(scores) == pl.read_csv(score_file, infer_schema=False).height
    assert np.all((scores > 0) & (scores < 1))
    return metrics, scores


def test_criteo_sample_end_to_end(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "criteo_sample" / "criteo_sample.txt"
    config = {
        "data": {
            "recipe": "criteo",
            "format": "csv",
            "has_header": True,
            "columns": None,
            "train": str(source),
            "split": {"valid_fraction": 0.2, "test_fraction": 0.2, "seed": 1},
        },
        "model": {**TINY_MODEL, "fs1_context": ["I1", "I2"], "fs2_context": ["C6"]},
        "train": TINY_TRAIN,
    }
    config["data"]["features"] = [{**f, "min_count": 1} for f in _criteo_features()]
    metrics, scores = run_and_score(config, tmp_path, source)
    assert len(scores) == 200
    assert metrics["rows"] == {"train": 120, "valid": 40, "test": 40}
    for split in ("valid", "test"):
        assert 0.0 <= metrics[split]["auc"] <= 1.0 and metrics[split]["logloss"] > 0
    again = evaluate_run(tmp_path / "run", source)
    assert set(again) == {"auc", "logloss"}


def _criteo_features() -> list[dict]:
    from finalmlp.data.recipes import criteo

    return criteo()["features"]


def test_taobao_with_sequences_end_to_end(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "taobao_ad_tiny"
    categorical = [
        "userid", "adgroup_id", "pid", "cate_id", "campaign_id", "customer", "brand",
        "cms_segid", "cms_group_id", "final_gender_code", "age_level", "pvalue_level",
        "shopping_level", "occupation", "new_user_class_level",
    ]  # fmt: skip
    features = [{"name": n, "type": "categorical"} for n in categorical]
    features.append({"name": "price", "type": "numeric", "transform": "log"})
    features.append(
        {
            "name": "click_sequence",
            "type": "sequence",
            "separator": "^",
            "max_len": 8,
            "share_embedding": "adgroup_id",
        }
    )
    config = {
        "data": {
            "train": str(folder / "train_sample.csv"),
            "valid": str(folder / "valid_sample.csv"),
            "test": str(folder / "test_sample.csv"),
            "label": "clk",
            "group": "userid",
            "features": features,
        },
        "model": {**TINY_MODEL, "fs1_context": ["userid"], "fs2_context": ["adgroup_id"]},
        "train": TINY_TRAIN,
    }
    metrics, scores = run_and_score(config, tmp_path, folder / "test_sample.csv")
    assert len(scores) == 100
    assert "gauc" in metrics["test"]
    # Scoring is per row: the same rows in reverse order get the same scores reversed.
    frame = pl.read_csv(folder / "test_sample.csv", infer_schema=False)
    frame.reverse().write_csv(tmp_path / "reversed.csv")
    predict_file(tmp_path / "run", tmp_path / "reversed.csv", tmp_path / "reversed_scores.csv")
    reversed_scores = pl.read_csv(tmp_path / "reversed_scores.csv")["score"].to_numpy()
    np.testing.assert_allclose(reversed_scores[::-1], scores, rtol=1e-6)


def _tiny_rows(num_rows: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    site = rng.choice([1005, 1002, 7, 42], size=num_rows)
    flag = rng.random(num_rows) < 0.4
    price = rng.normal(size=num_rows)
    logit = (site == 1005) * 1.5 - flag + price
    label = (rng.random(num_rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pl.DataFrame({"label": label, "site": site, "flag": flag, "price": price})


def test_scoring_ignores_labels_and_the_file_format(tmp_path: Path) -> None:
    """Train on CSV text; score the same rows as CSV with junk labels and as typed Parquet."""
    rows = _tiny_rows(300, seed=0)
    rows.write_csv(tmp_path / "train.csv")
    config = parse_config(
        {
            "data": {
                "train": str(tmp_path / "train.csv"),
                "features": [
                    {"name": "site", "type": "categorical"},
                    {"name": "flag", "type": "categorical"},
                    {"name": "price", "type": "numeric"},
                ],
                "cache_dir": str(tmp_path / "cache"),
            },
            "model": {"name": "lr"},
            "train": TINY_TRAIN,
        }
    )
    train_from_config(config, tmp_path / "run")
    score = _tiny_rows(20, seed=1)
    score.write_csv(tmp_path / "clean.csv")
    junk_labels = pl.Series("label", ["", "maybe", "7", " "] * 5)
    score.with_columns(junk_labels).write_csv(tmp_path / "junk.csv")
    # Parquet keeps the dtypes the CSV text lost: Int64 / Float64 ids, Boolean flags.
    score.drop("label").write_parquet(tmp_path / "int.parquet")
    score.with_columns(pl.col("site").cast(pl.Float64)).write_parquet(tmp_path / "float.parquet")
    scores = {}
    for name in ("clean.csv", "junk.csv", "int.parquet", "float.parquet"):
        out = tmp_path / f"scores_{name}.csv"
        assert predict_file(tmp_path / "run", tmp_path / name, out) == 20
        scores[name] = pl.read_csv(out)["score"].to_numpy()
    for name, values in scores.items():
        np.testing.assert_allclose(values, scores["clean.csv"], rtol=1e-6, err_msg=name)
    assert len(set(np.round(scores["clean.csv"], 6))) > 4  # the ids matter for the score
