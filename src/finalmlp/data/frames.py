"""Raw frames of a data config (files, or the synthetic generator), and their encoding."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl

from finalmlp.data.split import SPLITS, EncodedSplit
from finalmlp.errors import DataError
from finalmlp.features.history import RowHistories, build_histories
from finalmlp.features.processor import EncodedFeatures, FeatureProcessor
from finalmlp.schema import DataConfig, Join, SequenceFeature, SplitOptions


def load_frames(config: DataConfig) -> dict[str, pl.DataFrame]:
    """Raw train/valid/test frames; missing valid/test are split off train at random."""
    from finalmlp.data.badrows import warn_bad_rows
    from finalmlp.data.readers import read_table

    if config.format == "synthetic":
        from finalmlp.data.synthetic import generate_synthetic
        from finalmlp.schema import SyntheticOptions

        options = config.synthetic or SyntheticOptions()
        if options.histories:
            from finalmlp.data.synthetic_history import generate_event_log

            frames = {"train": generate_event_log(options)}
        else:
            frames = {"train": generate_synthetic(options)}
    else:
        assert config.train is not None
        paths = {name: getattr(config, name) for name in SPLITS if getattr(config, name)}
        # the files at once: reading and checking are mostly Polars work, outside the GIL
        with ThreadPoolExecutor(max_workers=len(paths), thread_name_prefix="finalmlp-read") as pool:
            futures = {
                name: pool.submit(read_table, Path(p), config, split=name, warn=False)
                for name, p in paths.items()
            }
            tables = {name: future.result() for name, future in futures.items()}
        for table in tables.values():  # from this thread: a warning names the user's call
            warn_bad_rows(table.bad_rows)
        frames = {name: table.frame for name, table in tables.items()}
    for join in config.join:
        frames = {name: _joined(frame, join, config) for name, frame in frames.items()}
    missing = [s for s in ("valid", "test") if s not in frames]
    if missing:
        frames.update(_random_split(frames.pop("train"), missing, config.split or SplitOptions()))
    return frames


def _joined(frame: pl.DataFrame, join: Join, config: DataConfig) -> pl.DataFrame:
    """``frame`` with ``join.columns`` of the lookup table, matched on ``join.on`` as text."""
    path = Path(join.path)
    if not path.is_absolute() and config.train is not None:
        path = Path(config.train).parent / path
    if not path.is_file():
        raise DataError(f"data.join table {str(path)!r} not found; check data.join[].path")
    lookup = (
        pl.read_parquet(path)
        if path.suffix == ".parquet"
        else pl.read_csv(path, infer_schema=False, separator="\t" if path.suffix == ".tsv" else ",")
    )
    missing = [c for c in [join.on, *join.columns] if c not in lookup.columns]
    if missing:
        raise DataError(
            f"column(s) {missing} not found in the join table {path}; it has {lookup.columns}"
        )
    key = "__join_key"
    lookup = lookup.select(
        pl.col(join.on).cast(pl.Utf8).str.strip_chars().alias(key), *join.columns
    )
    dupes = lookup[key].is_duplicated()
    if dupes.any():
        raise DataError(
            f"the join table {path} holds key {lookup[key][int(dupes.arg_max() or 0)]!r} of "
            f"{join.on!r} twice; a lookup needs one row per key"
        )
    keyed = frame.with_columns(pl.col(join.on).cast(pl.Utf8).str.strip_chars().alias(key))
    return (
        keyed.drop([c for c in join.columns if c in frame.columns])
        .join(lookup, on=key, how="left", maintain_order="left")
        .drop(key)
    )


def frame_histories(frames: dict[str, pl.DataFrame], config: DataConfig) -> dict[str, RowHistories]:
    """Each split's built histories (``data.history``); empty without it."""
    if config.history is None:
        return {}
    columns = [f.history for f in config.features if isinstance(f, SequenceFeature) and f.history]
    return build_histories(frames, config.history, list(dict.fromkeys(columns)))


def _random_split(
    frame: pl.DataFrame, missing: list[str], options: SplitOptions
) -> dict[str, pl.DataFrame]:
    fractions = {"valid": options.valid_fraction, "test": options.test_fraction}
    if options.by is not None:
        return _time_split(frame, missing, options.by, fractions)
    order = np.random.default_rng(options.seed).permutation(frame.height)
    out, start = {}, 0
    for name in missing:
        count = round(fractions[name] * frame.height)
        if count == 0:
            raise DataError(
                f"data.split.{name}_fraction={fractions[name]} leaves no {name} rows out of "
                f"{frame.height}; give a {name} file or a larger fraction"
            )
        out[name] = frame[np.sort(order[start : start + count])]
        start += count
    out["train"] = frame[np.sort(order[start:])]
    return out


def _time_split(
    frame: pl.DataFrame, missing: list[str], column: str, fractions: dict[str, float]
) -> dict[str, pl.DataFrame]:
    """The latest rows (by ``column``) become test, those before them valid; each split in
    time order. Rows with the same time go to the same split."""
    from finalmlp.columns import parse_floats

    if column not in frame.columns:
        raise DataError(f"data.split.by names {column!r}, which is not a column read")
    times = parse_floats(frame[column], "numeric", lambda row: f"row {row + 1:,} (data.split.by)")
    if times.null_count():
        row = int(times.is_null().arg_max() or 0)
        raise DataError(f"data.split.by column {column!r} is empty on row {row + 1:,}")
    order = np.argsort(times.to_numpy(), kind="stable")
    sorted_times = times.to_numpy()[order]
    out: dict[str, pl.DataFrame] = {}
    stop = frame.height
    for name in ("test", "valid"):
        if name not in missing:
            continue
        count = round(fractions[name] * frame.height)
        # move the cut back to the first row of its time: ties never straddle two splits
        start = int(np.searchsorted(sorted_times, sorted_times[max(stop - count, 0)], "left"))
        if count == 0 or start <= 0 or start >= stop:
            raise DataError(
                f"data.split.{name}_fraction={fractions[name]} leaves no {name} rows out of "
                f"{frame.height} in time order; give a {name} file or a larger fraction"
            )
        out[name] = frame[order[start:stop]]
        stop = start
    out["train"] = frame[order[:stop]]
    return {name: out[name] for name in ("train", *missing)}


def label_matrix(frame: pl.DataFrame, config: DataConfig) -> np.ndarray | None:
    """The tasks' parsed labels as (N, T) float32, NaN where missing; None when the frame has
    no label column (an unlabelled file)."""
    columns = [task.frame_column for task in config.tasks]
    if not all(c in frame.columns for c in columns):
        return None
    out = np.empty((frame.height, len(columns)), dtype=np.float32)
    for t, column in enumerate(columns):
        out[:, t] = frame[column].cast(pl.Float32).fill_null(float("nan")).to_numpy()
    return out


def encode_frame(
    processor: FeatureProcessor,
    frame: pl.DataFrame,
    config: DataConfig,
    *,
    labelled: bool = True,
    encoded: EncodedFeatures | None = None,
    histories: RowHistories | None = None,
) -> EncodedSplit:
    """Encode one raw frame; with ``labelled`` also its labels and group (when present).

    Scoring passes ``labelled=False``: neither label nor group is then computed, whatever
    columns the frame holds. ``encoded``: the frame's features already encoded (fit_transform).
    """
    label = label_matrix(frame, config) if labelled else None
    group = None
    if labelled and config.group is not None and config.group in frame.columns:
        # Missing ids form one group of their own (a null rank would be cast from NaN).
        keys = frame[config.group].cast(pl.Utf8).fill_null("")
        group = keys.rank("dense").to_numpy().astype(np.int64)
    features = encoded if encoded is not None else processor.transform(frame, histories)
    return EncodedSplit(features, label, group)
