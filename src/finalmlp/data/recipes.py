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


CENSUS_COLUMNS = (
    "age", "class_of_worker", "detailed_industry_recode", "detailed_occupation_recode",
    "education", "wage_per_hour", "enroll_in_edu_inst_last_wk", "marital_stat",
    "major_industry_code", "major_occupation_code", "race", "hispanic_origin", "sex",
    "member_of_a_labor_union", "reason_for_unemployment", "full_or_part_time_employment_stat",
    "capital_gains", "capital_losses", "dividends_from_stocks", "tax_filer_stat",
    "region_of_previous_residence", "state_of_previous_residence",
    "detailed_household_and_family_stat", "detailed_household_summary_in_household",
    "instance_weight", "migration_code_change_in_msa", "migration_code_change_in_reg",
    "migration_code_move_within_reg", "live_in_this_house_1_year_ago",
    "migration_prev_res_in_sunbelt", "num_persons_worked_for_employer",
    "family_members_under_18", "country_of_birth_father", "country_of_birth_mother",
    "country_of_birth_self", "citizenship", "own_business_or_self_employed",
    "fill_inc_questionnaire_for_veterans_admin", "veterans_benefits", "weeks_worked_in_year",
    "year", "income",
)  # fmt: skip
CENSUS_MONEY = ("wage_per_hour", "capital_gains", "capital_losses", "dividends_from_stocks")
CENSUS_COUNTS = ("age", "num_persons_worked_for_employer", "weeks_worked_in_year")
MARITAL_STATUSES = (
    "Never married", "Married-civilian spouse present", "Married-spouse absent", "Separated",
    "Divorced", "Widowed", "Married-A F spouse present",
)  # fmt: skip


def census_income() -> dict[str, Any]:
    """UCI Census-Income (KDD), the MMoE paper's two-task set (Ma et al., KDD 2018): income
    over 50K and marital status "Never married", from the 41 attributes less the instance
    weight (which the paper drops) and the marital status itself (the second task's answer).

    Comma-separated without header, values after ", " (tokens are stripped). The money columns
    are log-transformed, the counts standardised, the coded columns (industry and occupation
    recodes, year...) categorical. With only one file, ``split`` carves a seeded 80/10/10.
    """
    numeric = [{"name": n, "type": "numeric", "transform": "log"} for n in CENSUS_MONEY]
    numeric += [{"name": n, "type": "numeric", "transform": "standard"} for n in CENSUS_COUNTS]
    skipped = {"instance_weight", "marital_stat", "income", *CENSUS_MONEY, *CENSUS_COUNTS}
    categorical = [{"name": n, "type": "categorical"} for n in CENSUS_COLUMNS if n not in skipped]
    never_married = {status: int(status == "Never married") for status in MARITAL_STATUSES}
    return {
        "format": "csv",
        "has_header": False,
        "columns": list(CENSUS_COLUMNS),
        "labels": [
            {"name": "income", "column": "income", "label_map": {"- 50000.": 0, "50000+.": 1}},
            {"name": "never_married", "column": "marital_stat", "label_map": never_married},
        ],
        "features": numeric + categorical,
        "split": {"valid_fraction": 0.1, "test_fraction": 0.1, "seed": 2023},
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


RATINGS = [x / 2 for x in range(1, 11)]  # MovieLens ratings 0.5 .. 5.0


def movielens_latest() -> dict[str, Any]:
    """MovieLens ml-latest-small ``ratings.csv`` (``data.train``) with the movies' genres
    joined from ``movies.csv`` beside it, following DIN's MovieLens protocol (Zhou et al.,
    KDD 2018, Sec. 6.1): label = rating >= 4; features the user, the movie, its genres (the
    genre combination as the movie's category, and the genres as a mean-pooled sequence), and
    the user's earlier rated movies and their genre combinations as histories (every rating
    is a behaviour; the last 50 before the row), pooled by attention to the candidate movie
    and its genres. Split by time: the latest 10% of ratings are test, the 10% before valid.
    """
    label_map = {f"{r:.1f}": int(r >= 4) for r in RATINGS}
    label_map.update({str(int(r)): int(r >= 4) for r in RATINGS if r == int(r)})
    return {
        "format": "csv",
        "label": "rating",
        "label_map": label_map,
        "join": [{"path": "movies.csv", "on": "movieId", "columns": ["genres"]}],
        "features": [
            {"name": "userId", "type": "categorical"},
            {"name": "movieId", "type": "categorical"},
            {"name": "genres", "type": "categorical"},
            {
                "name": "genre_list",
                "source": "genres",
                "type": "sequence",
                "separator": "|",
                "max_len": 10,
            },
            {
                "name": "hist_movies",
                "type": "sequence",
                "history": "movieId",
                "share_embedding": "movieId",
                "pooling": "attention",
                "target": "movieId",
            },
            {
                "name": "hist_genres",
                "type": "sequence",
                "history": "genres",
                "share_embedding": "genres",
                "pooling": "attention",
                "target": "genres",
            },
        ],
        "history": {"user": "userId", "time": "timestamp", "max_len": 50},
        "split": {"valid_fraction": 0.1, "test_fraction": 0.1, "by": "timestamp"},
    }


RECIPES: dict[str, Callable[[], dict[str, Any]]] = {
    "frappe_x1": frappe_x1,
    "criteo": criteo,
    "avazu": avazu,
    "census_income": census_income,
    "synthetic": synthetic,
    "movielens_latest": movielens_latest,
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
        if options is not None and options.histories:
            from finalmlp.data.synthetic_history import event_log_config

            base.update(event_log_config())
        elif options is not None:
            base["features"] = synthetic_features(options)
    return {**base, **data, **_recipe_labels(base, data)}


def _recipe_labels(base: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """A user's ``labels`` may name a subset of the recipe's tasks (``labels: [income]`` trains
    that task alone with the recipe's column and label map); ``label`` replaces them all."""
    if "labels" not in base:
        return {}
    if "label" in data and "labels" not in data:
        return {"labels": None}
    chosen = data.get("labels")
    if not isinstance(chosen, list):
        return {}
    known = {spec["name"]: spec for spec in base["labels"]}
    return {"labels": [known.get(item, item) if isinstance(item, str) else item for item in chosen]}
