"""Reading task data: local CSV, JSON Lines, JSON and text files, or Hub datasets."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from .errors import DataError

__all__ = ["load_hub_dataset", "load_records", "read_records", "require_column"]

logger = logging.getLogger(__name__)

HUB_PREFIX = "hf:"


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Read a data file into one dict per record.

    ``.csv`` files need a header row; ``.jsonl`` files hold one JSON object per
    line; ``.json`` files hold an array of objects; any other file is text,
    one record ``{"text": line}`` per non-empty line.

    Raises:
        DataError: the file is missing, empty, not UTF-8 or malformed.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist; check the path")
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(
            f"data file {str(path)!r} is not valid UTF-8 ({error}); convert it to UTF-8"
        ) from None
    records = _parse(path, content)
    if not records:
        raise DataError(f"data file {str(path)!r} has no records")
    return records


def require_column(records: list[dict], columns: list[str], source: str) -> str:
    """Return the first of ``columns`` that every record has.

    Raises:
        DataError: no column of ``columns`` is present, naming those found.
    """
    present = set(records[0])
    for column in columns:
        if column in present:
            missing = [i for i, r in enumerate(records) if r.get(column) is None]
            if missing:
                raise DataError(
                    f"{source}: record {missing[0]} has no value in column {column!r}"
                )
            return column
    raise DataError(
        f"{source} has no column {' or '.join(repr(c) for c in columns)}; its "
        f"columns are {sorted(present)}"
    )


def load_hub_dataset(
    dataset_id: str,
    split: str,
    shuffle_seed: int | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Load a split of a Hugging Face Hub dataset as a list of dicts.

    Args:
        dataset_id: the dataset's Hub id.
        split: the split to load, such as ``"test"``.
        shuffle_seed: shuffle the split with ``Dataset.shuffle(seed=...)`` first.
        limit: keep only the first ``limit`` records (after shuffling).

    Raises:
        DataError: the dataset could not be loaded, for example offline.
    """
    import datasets

    logger.info("loading the %s split of the dataset %s", split, dataset_id)
    try:
        loaded = datasets.load_dataset(dataset_id, split=split)
    except Exception as error:  # datasets raises many unrelated types offline
        raise DataError(
            f"could not load the {split!r} split of the Hub dataset {dataset_id!r}: "
            f"{type(error).__name__}: {error}. Offline, pass a local CSV or JSONL "
            "file instead."
        ) from error
    if shuffle_seed is not None:
        loaded = loaded.shuffle(seed=shuffle_seed)
    if limit is not None:
        loaded = loaded.select(range(min(limit, len(loaded))))
    return [dict(record) for record in loaded]


def _parse(path: Path, content: str) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return list(csv.DictReader(content.splitlines()))
    if suffix == ".jsonl":
        return [_json_record(path, n, line) for n, line in _lines(content)]
    if suffix == ".json":
        data = _json(path, content)
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise DataError(f"{str(path)!r} must hold a JSON array of objects")
        return data
    return [{"text": line} for _, line in _lines(content)]


def _lines(content: str) -> list[tuple[int, str]]:
    return [(n, line) for n, line in enumerate(content.splitlines(), 1) if line.strip()]


def _json_record(path: Path, number: int, line: str) -> dict[str, Any]:
    record = _json(path, line, number)
    if not isinstance(record, dict):
        raise DataError(f"{str(path)!r} line {number} is not a JSON object")
    return record


def _json(path: Path, text: str, line: int | None = None) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        where = f" line {line}" if line is not None else ""
        raise DataError(f"{str(path)!r}{where} is not valid JSON: {error}") from None


def load_records(
    source: str,
    split: str,
    shuffle_seed: int | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Return the records of a local file or of a Hub dataset ``hf:DATASET[:SPLIT]``.

    Args:
        source: a CSV, JSON Lines or JSON file, or ``hf:DATASET[:SPLIT]``.
        split: the Hub split to load when ``source`` names none.
        shuffle_seed: shuffle a Hub split with this seed first.
        limit: keep only the first ``limit`` records of a Hub split.
    """
    if not source.startswith(HUB_PREFIX):
        return read_records(source)
    dataset, _, named_split = source.removeprefix(HUB_PREFIX).partition(":")
    return load_hub_dataset(
        dataset, named_split or split, shuffle_seed=shuffle_seed, limit=limit
    )
