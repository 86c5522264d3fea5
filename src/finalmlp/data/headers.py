"""Whether a CSV/TSV file starts with a header line, decided per file.

``data.has_header`` is ``true``, ``false``, ``auto`` (the default) or a mapping per split, such
as ``{train: true, valid: false, test: false}`` (a split it leaves out is ``auto``). It applies
to the files of ``data.train``/``valid``/``test``; a file to score or evaluate is always
``auto``, so ``predict`` never scores a header line as a row.

``auto`` looks at the first line:

- it is a header when it names every column the config reads (the label, the features'
  columns, the group), or when it names at least half of the known column names at their
  places and holds no number;
- else, when the column names are known (``data.columns``, a recipe's, or the header of the
  training file, for valid/test), the file has no header and those names apply;
- else it is a header, unless it holds numbers or empty fields: then the file has no header
  and no names to read it by, which is an error.

``true`` and ``false`` are checked too: a first line that is data where a header is expected,
or a header where data is expected, is an error naming the file and the setting to change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from finalmlp.columns import is_number
from finalmlp.data.csvlines import split_fields
from finalmlp.data.textlines import first_line
from finalmlp.errors import DataError
from finalmlp.schema import DataConfig, HeaderSetting


@dataclass(frozen=True)
class FileHeader:
    """How one file is laid out: whether line 1 is a header, and the column names."""

    present: bool
    names: list[str]


@dataclass(frozen=True)
class HeaderRule:
    """How to tell the header of one file: ``data.has_header`` for it, the column names known
    without a header, and its split (None: a file to score or evaluate)."""

    setting: HeaderSetting
    known: list[str] | None
    split: str | None
    from_columns: bool  # the known names are data.columns (else the train file's header)

    @classmethod
    def of(cls, config: DataConfig, split: str | None, train_wanted: list[str]) -> HeaderRule:
        """The rule for the file of ``split``; ``train_wanted``: the columns read from train."""
        known = known_columns(config, split, train_wanted)
        return cls(header_setting(config, split), known, split, bool(config.columns))

    def layout(self, path: Path, separator: str, wanted: list[str]) -> FileHeader:
        """Whether ``path`` has a header and its column names: the header's, or the known
        names checked against the first line's width.

        Raises:
            DataError: see :func:`resolve_header`; a width that differs from the known names.
        """
        where = "data.has_header" + (f" ({self.split})" if self.split else "")
        layout = resolve_header(path, separator, wanted, self.setting, self.known, where)
        if layout.present:
            return layout
        width = len(first_fields(path, separator))
        if width != len(layout.names):
            source = "data.columns names" if self.from_columns else "the train file's header names"
            raise DataError(
                f"{path} has {width} columns but {source} {len(layout.names)}; "
                "list one name per column"
            )
        return layout


def csv_separator(config: DataConfig) -> str:
    """``data.separator``, else ``,`` for csv and a tab for tsv."""
    return config.separator or ("\t" if config.format == "tsv" else ",")


def known_columns(
    config: DataConfig, split: str | None, train_wanted: list[str]
) -> list[str] | None:
    """``data.columns``, or for valid/test the header of the train file when it has one."""
    if config.columns or config.format not in ("csv", "tsv"):
        return config.columns
    train = Path(config.train) if config.train is not None else None
    if split not in ("valid", "test") or train is None or not train.is_file():
        return None
    rule = HeaderRule(header_setting(config, "train"), None, "train", False)
    try:
        return rule.layout(train, csv_separator(config), train_wanted).names
    except DataError:  # reading the train file reports it
        return None


def header_setting(config: DataConfig, split: str | None) -> HeaderSetting:
    """``data.has_header`` for the file of ``split`` (train/valid/test); ``auto`` for a file
    that is no split (one to score or evaluate)."""
    setting = config.has_header
    if split is None:
        return "auto"
    if isinstance(setting, dict):
        return setting.get(split, "auto")  # type: ignore[call-overload]
    return setting


def first_fields(path: Path, separator: str) -> list[str]:
    """The fields of the first line (quotes removed, a UTF-8 BOM dropped, empty as "")."""
    text = first_line(path).decode("utf-8", errors="replace").removeprefix("\ufeff")
    if not text:
        raise DataError(f"{path} starts with an empty line; expected a header or a data row")
    return split_fields(text, separator)


def resolve_header(
    path: Path,
    separator: str,
    wanted: list[str],
    setting: HeaderSetting,
    known: list[str] | None,
    where: str,
) -> FileHeader:
    """Decide whether ``path`` has a header (see the module docstring).

    Args:
        path: the CSV/TSV file.
        separator: the field separator.
        wanted: the columns the config reads from it.
        setting: ``data.has_header`` for this file.
        known: the column names when known without a header (``data.columns``, or the
            training file's header for valid/test).
        where: how messages name the setting, e.g. ``data.has_header (valid)``.

    Raises:
        DataError: the first line contradicts ``setting``, or a file without header has no
            known column names.
    """
    first = first_fields(path, separator)
    stripped = [name.strip() for name in first]
    if setting == "auto":
        setting = _looks_like_header(stripped, wanted, known)
    if setting:
        _check_is_header(path, stripped, wanted, where)
        return FileHeader(True, first)
    if known is None:
        raise DataError(
            f"{path} has no header line, and no column names are known to read it by; "
            "set data.columns (the names in file order), or add a header line"
        )
    if _names_every(stripped, wanted) and not _holds_data(stripped):
        raise DataError(
            f"line 1 of {path} is a header (it names {_shown(stripped)}), but {where} is "
            "false for this file; set it to auto (each file's header is detected) or true, "
            "or remove the line"
        )
    return FileHeader(False, list(known))


def _looks_like_header(first: list[str], wanted: list[str], known: list[str] | None) -> bool:
    if _names_every(first, wanted):
        return True
    if known is None:
        return not _holds_data(first)
    in_place = sum(a == b for a, b in zip(first, known, strict=False))
    return not _holds_data(first) and in_place >= max(1, len(known) / 2)


def _check_is_header(path: Path, first: list[str], wanted: list[str], where: str) -> None:
    """Raise when a first line read as the header is data, or names a column twice."""
    if not _names_every(first, wanted) and _holds_data(first):
        raise DataError(
            f"the first line of {path} is data, not a header (it holds {_shown(first)}), "
            f"but {where} says it has a header; is a header present in one file and "
            "not in another? Set data.has_header: auto (each file's header is detected), or "
            "set it per file, e.g. {train: true, valid: false, test: false}"
        )
    repeated = sorted({name for name in first if first.count(name) > 1})
    if repeated:
        raise DataError(
            f"the header of {path} names column {repeated[0]!r} more than once; "
            "rename the duplicates so each column has its own name"
        )


def _names_every(first: list[str], wanted: list[str]) -> bool:
    return bool(wanted) and set(wanted) <= set(first)


def _holds_data(fields: list[str]) -> bool:
    """Whether some field is empty or a number: a header names every column."""
    return any(field == "" or is_number(field) for field in fields)


def _shown(fields: list[str]) -> str:
    shown = ", ".join(repr(f) for f in fields[:6])
    return shown + (", ..." if len(fields) > 6 else "")
