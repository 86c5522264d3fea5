"""A synthetic event log whose labels depend on the relevance of the item to the user's
earlier clicks: the test bed of behaviour histories without ``../shared`` data.

Each row is one impression::

    user   time    item   category  label
    Utf8   Int64   Utf8   Utf8      Int8

Every user has a sparse interest over ``NUM_CATEGORIES`` categories (a Dirichlet draw with a
small concentration: a few categories carry most of it). An impression's item is drawn from
the user's interests half of the time and uniformly otherwise; each item belongs to one
category. The click probability is ``sigmoid(BASE + STRENGTH * interest[user, category])``:
what the user clicked before (their history, with ``behaviour: label == 1``) tells which
categories they like, and a candidate item is clicked when its category is among them. Users
are many and have few rows each (``ROWS_PER_USER``), so the user id alone learns little; the
history, pooled with attention to the candidate, is what carries the signal.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from finalmlp.schema import SyntheticOptions

NUM_CATEGORIES = 12
ITEMS_PER_CATEGORY = 10
ROWS_PER_USER = 20
CONCENTRATION = 0.1
BASE, STRENGTH = -2.5, 6.0
MAX_LEN = 20


def generate_event_log(options: SyntheticOptions) -> pl.DataFrame:
    """``options.num_rows`` impressions of ``num_rows / ROWS_PER_USER`` users, deterministic
    in ``options.seed``. Rows are in random order (the builder sorts by time)."""
    rng = np.random.default_rng(options.seed)
    num_users = max(1, options.num_rows // ROWS_PER_USER)
    interest = rng.dirichlet(np.full(NUM_CATEGORIES, CONCENTRATION), size=num_users)  # (U, C)
    users = rng.integers(0, num_users, options.num_rows)
    liked = (interest[users].cumsum(axis=1) > rng.random(options.num_rows)[:, None]).argmax(1)
    uniform = rng.integers(0, NUM_CATEGORIES, options.num_rows)
    category = np.where(rng.random(options.num_rows) < 0.5, liked, uniform)
    item = category * ITEMS_PER_CATEGORY + rng.integers(0, ITEMS_PER_CATEGORY, options.num_rows)
    logit = BASE + STRENGTH * interest[users, category]
    label = rng.random(options.num_rows) < 1.0 / (1.0 + np.exp(-logit))
    return pl.DataFrame(
        {
            "user": [f"u{u}" for u in users],
            "time": rng.integers(0, 10**9, options.num_rows),
            "item": [f"i{i}" for i in item],
            "category": [f"k{c}" for c in category],
            "label": label.astype(np.int8),
        }
    )


def event_log_config() -> dict[str, Any]:
    """The data config keys (features, history, split) for :func:`generate_event_log`:
    candidate item and category, the user, and the histories of earlier clicked items and
    their categories, each pooled by attention to the candidate's."""
    return {
        "features": [
            {"name": "user", "type": "categorical"},
            {"name": "item", "type": "categorical"},
            {"name": "category", "type": "categorical"},
            {
                "name": "hist_item",
                "type": "sequence",
                "history": "item",
                "share_embedding": "item",
                "pooling": "attention",
                "target": "item",
            },
            {
                "name": "hist_category",
                "type": "sequence",
                "history": "category",
                "share_embedding": "category",
                "pooling": "attention",
                "target": "category",
            },
        ],
        "history": {
            "user": "user",
            "time": "time",
            "max_len": MAX_LEN,
            "behaviour": {"column": "label", "op": "==", "value": 1},
        },
        "split": {"valid_fraction": 0.1, "test_fraction": 0.1, "by": "time"},
    }
