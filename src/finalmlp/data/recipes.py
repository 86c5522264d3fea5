"""Built-in dataset recipes: defaults for a known dataset, merged under the user's data config.

A config says ``data: {recipe: criteo, train: day_0.txt}`` and gets the right columns, label and
features; any key it sets itself wins (``features`` replaces the recipe's list). Each recipe names
its columns in file order, so a file of that dataset reads with or without its header line
(``has_header: auto``, the default, detects it per file).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from finalmlp.errors import ConfigError

FRAPPE_FIELDS = (
    "user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country",
    "city",
)  # fmt: skip
CRITEO_NUMERIC = tuple(f"I{i}" for i in range(1, 14))
CRITEO_CATEGORICAL = tuple(f"C{i}" for i in range(1, 27))
AVAZU_FIELDS = (
    "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id",
    "app_domain", "app_category", "device_id", "device_ip", "device_model", "device_type",
    "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21",
)  # fmt: skip


def frappe_x1() -> dict[str, Any]:
    """The FinalMLP paper's Frappe benchmark (BARS Frappe_x1): 10 categorical fields,
    min_count 1 as the BARS evaluation settings prescribe."""
    return {
        "format": "csv",
        "columns": ["label", *FRAPPE_FIELDS],
        "label": "label",
        "features": [{"name": n, "type": "categorical"} for n in FRAPPE_FIELDS],
    }


def criteo() -> dict[str, Any]:
    """Criteo Kaggle ``train.txt``: TSV without header, label, I1-I13, C1-C26.

    The standard recipe (DCN/AutoInt/BARS Criteo_x1): numeric x becomes the category
    floor(log(x)^2) when x > 2 (else x itself), missing values are their own category
    (``"null"``, never merged with a real -1), and rare values (fewer than 10 occurrences in
    train) share the OOV id.
    """
    numeric = [
        {"name": n, "type": "numeric", "bucketize": "log_square", "min_count": 10}
        for n in CRITEO_NUMERIC
    ]
    categorical = [{"name": n, "type": "categorical", "min_count": 10} for n in CRITEO_CATEGORICAL]
    return {
        "format": "tsv",
        "columns": ["label", *CRITEO_NUMERIC, *CRITEO_CATEGORICAL],
        "label": "label",
        "features": numeric + categorical,
    }


def avazu() -> dict[str, Any]:
    """Avazu Kaggle ``train`` CSV: label ``click``, 22 categorical fields (``id`` dropped),
    rare values (fewer than 2 occurrences in train) to OOV.

    ``hour`` (YYMMDDHH) is used as a raw category: every hour of the 10 days is its own value,
    and hours after the training period are all OOV. You may want to derive hour-of-day and
    weekday columns from it first and list those as features instead.
    """
    return {
        "format": "csv",
        "columns": ["id", "click", *AVAZU_FIELDS],
        "label": "click",
        "features": [{"name": n, "type": "categorical", "min_count": 2} for n in AVAZU_FIELDS],
    }


def synthetic() -> dict[str, Any]:
    """The built-in generator (finalmlp.data.synthetic): no files needed."""
    from finalmlp.data.synthetic import synthetic_features
    from finalmlp.schema import SyntheticOptions

    return {
        "format": "synthetic",
        "label": "label",
        "features": synthetic_features(SyntheticOptions()),
    }


RECIPES: dict[str, Callable[[], dict[str, Any]]] = {
    "frappe_x1": frappe_x1,
    "criteo": criteo,
    "avazu": avazu,
    "synthetic": synthetic,
}


def apply_recipe(data: dict[str, Any]) -> dict[str, Any]:
    """Merge a recipe's defaults under ``data`` (the user's keys win)."""
    name = data.get("recipe")
    if name is None:
        return data
    if name not in RECIPES:
        close = difflib.get_close_matches(str(name), list(RECIPES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown data.recipe {name!r}{hint} (known: {sorted(RECIPES)})")
    base = RECIPES[name]()
    if name == "synthetic" and isinstance(data.get("synthetic"), dict):
        from pydantic import ValidationError

        from finalmlp.data.synthetic import synthetic_features
        from finalmlp.schema import SyntheticOptions

        try:
            options = SyntheticOptions.model_validate(data["synthetic"])
        except ValidationError:  # reported with its dotted key (data.synthetic...) by the caller
            options = None
        if options is not None:
            base["features"] = synthetic_features(options)
    return {**base, **data}
