"""The report's attention section: per-item weights of a few test rows' histories next to the
target, and the mean weight by position; only for runs with attention-pooled sequences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from finalmlp.bundle import Run, load_run
from finalmlp.config import parse_config
from finalmlp.data.frames import frame_histories, load_frames
from finalmlp.data.split import BatchLoader
from finalmlp.report.attention import attention_embedding, attention_summary
from finalmlp.report.build import build_sections, load_splits
from finalmlp.train.run import train_from_config

DATA = {"recipe": "synthetic", "synthetic": {"num_rows": 2000, "histories": True, "seed": 5}}
TRAIN = {"batch_size": 256, "max_epochs": 1, "progress": False, "seed": 3}


def _train(folder: Path, model: dict[str, object], data: dict[str, object]) -> Run:
    config = parse_config({"data": {**data, "cache_dir": str(folder / "cache")},
                           "model": model, "train": TRAIN})  # fmt: skip
    train_from_config(config, folder / "run")
    return load_run(folder / "run")


@pytest.fixture(scope="module")
def din_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    model = {"name": "din", "embedding_dim": 8, "mlp": {"hidden_units": [16]}}
    return _train(tmp_path_factory.mktemp("din"), model, DATA)


def test_section_shows_each_rows_real_items_with_weights(din_run: Run) -> None:
    splits = load_splits(din_run)
    summaries = attention_summary(din_run.model, din_run.processor, splits["test"])
    assert [s.field for s in summaries] == ["hist_item", "hist_category"]
    assert [s.target for s in summaries] == ["item", "category"]
    frames = load_frames(din_run.config.data)
    built = frame_histories(frames, din_run.config.data)["test"]
    for summary, column in zip(summaries, ("item", "category"), strict=True):
        assert len(summary.examples) == 5
        events = built.events[column].to_list()
        for example in summary.examples:
            end, length = int(built.ends[example.row]), int(built.lengths[example.row])
            # the row's raw history, most recent first: no padding, nothing else
            assert [item for item, _ in example.items] == events[end - length : end][::-1]
            assert example.target == frames["test"][column][example.row]
            assert all(np.isfinite(w) for _, w in example.items)
        reached = summary.position_rows > 0
        assert reached[0] and np.isfinite(summary.position_means[reached]).all()
        assert np.isnan(summary.position_means[~reached]).all()
        lengths = np.asarray(built.lengths)
        assert summary.position_rows[0] == (lengths > 0).sum()  # position 1: every history
        longest = int(lengths.max())
        assert summary.position_rows[longest - 1] == (lengths == longest).sum()
        assert not summary.position_rows[longest:].any()


def test_weights_are_the_ones_the_pooling_sums_with(din_run: Run) -> None:
    embedding = attention_embedding(din_run.model)
    assert embedding is not None
    split = load_splits(din_run)["test"]
    batch = next(iter(BatchLoader(split, 64)))
    din_run.model.eval()
    with torch.no_grad():
        for index in range(len(embedding.seq_cols)):
            weights = embedding.attention_weights(batch, index)
            items, mask = embedding.embed_sequence(batch, index)
            assert weights is not None and (weights[~mask] == 0).all()
            pooled = (weights.unsqueeze(-1) * items).sum(dim=1)
            torch.testing.assert_close(pooled, embedding.pool_sequence(batch, index))


def test_the_report_has_the_section(din_run: Run) -> None:
    sections = build_sections(din_run, load_splits(din_run))
    section = next(s for s in sections if s.title == "Attention over histories")
    assert "position 1 is the most recent" in section.notes[0]
    assert len(section.images) == 1 and section.images[0].png.startswith(b"\x89PNG")
    example_rows = section.tables[0].rows
    assert len(example_rows) == 5
    for row in example_rows:  # the items column counts the listed items
        assert int(row[2]) == len(row[3].split(", "))


def test_no_section_without_attention(tmp_path: Path) -> None:
    data = {**DATA, "features": [
        {"name": "user", "type": "categorical"}, {"name": "item", "type": "categorical"},
        {"name": "hist_item", "type": "sequence", "history": "item", "share_embedding": "item"},
    ]}  # fmt: skip
    run = _train(tmp_path, {"name": "dnn", "embedding_dim": 4, "mlp": {"hidden_units": [8]}}, data)
    splits = load_splits(run)
    assert attention_summary(run.model, run.processor, splits["test"]) == []
    assert all(s.title != "Attention over histories" for s in build_sections(run, splits))
