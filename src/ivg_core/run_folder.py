"""The output folder of a task run: manifest, resumable parts and final files.

A run decodes prompts in fixed batches. Each finished batch is appended, with
its golden scores and timing, as one JSON line to ``parts/rank-N.jsonl`` and
flushed to disk, so an interrupted run loses at most the batches in flight.
Running the same command again reads every part file, skips the batches
already there and decodes the rest; since batches are fixed and every prompt
has its own random generator, the merged outputs equal those of a run that
was never interrupted, whatever number of processes wrote the parts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from .errors import SpecError

__all__ = ["BatchRecord", "RunFolder", "manifest_for"]

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PARTS = "parts"
GENERATIONS = "generations.jsonl"
SPECS = "specs"
OUTPUT_FILES = (GENERATIONS, "report.json", "report.md")
PACKAGES = ("ivg", "torch", "transformers", "accelerate", "pydantic", "pluggy")


@dataclass
class BatchRecord:
    """One finished batch of one method: its rows, golden scores and timing."""

    method: str
    batch: int
    rows: list[dict[str, Any]]
    wall_seconds: float
    decoded_tokens: int

    def to_json(self) -> str:
        return json.dumps(self.__dict__, ensure_ascii=False)


def manifest_for(setup: dict[str, Any]) -> dict[str, Any]:
    """Return a run manifest: what defines the outputs, its hash and versions.

    Args:
        setup: everything that determines the outputs (task, preset, resolved
            specs, evaluator, prompt source, limit, batch size), as JSON data.
    """
    text = json.dumps(setup, sort_keys=True)
    return {
        "setup": setup,
        "setup_hash": hashlib.sha256(text.encode()).hexdigest(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
    }


class RunFolder:
    """Reads and writes the files of one run's output folder."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def prepare(self, manifest: dict[str, Any], overwrite: bool) -> bool:
        """Create the folder, or check that it belongs to the same run.

        Returns:
            whether earlier output of the same run was found (a resume).

        Raises:
            SpecError: the folder holds a run of another setup and ``overwrite``
                is false.
        """
        existing = self._read_manifest()
        if existing is not None and existing["setup_hash"] != manifest["setup_hash"]:
            if not overwrite:
                raise SpecError(
                    f"{self.path} holds the outputs of a different run (another "
                    "task, preset, spec, prompt source, limit or batch size); "
                    "choose another --out folder, or pass --overwrite to delete "
                    "them"
                )
            logger.warning("deleting the outputs of a different run in %s", self.path)
            self._clear()
            existing = None
        self.path.mkdir(parents=True, exist_ok=True)
        if existing is None:
            (self.path / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        return existing is not None

    def done_batches(self) -> dict[tuple[str, int], BatchRecord]:
        """Return the finished batches in every part file, by (method, batch)."""
        done: dict[tuple[str, int], BatchRecord] = {}
        for part in sorted((self.path / PARTS).glob("rank-*.jsonl")):
            for record in _read_records(part):
                done.setdefault((record.method, record.batch), record)
        return done

    def append(self, rank: int, record: BatchRecord) -> None:
        """Append a finished batch to this process's part file and sync it."""
        folder = self.path / PARTS
        folder.mkdir(exist_ok=True)
        path = folder / f"rank-{rank}.jsonl"
        # A process killed mid-write leaves a line without its newline; the
        # record starts on a line of its own.
        start = "\n" if _ends_without_newline(path) else ""
        with path.open("a", encoding="utf-8") as handle:
            handle.write(start + record.to_json() + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def write_generations(self, rows: list[dict[str, Any]]) -> Path:
        """Write the merged rows, one JSON line each, and return the path."""
        path = self.path / GENERATIONS
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        _write_atomic(path, text)
        return path

    def write_spec(self, method: str, spec: dict[str, Any]) -> Path:
        """Write one method's resolved spec under ``specs/`` and return the path."""
        path = self.path / SPECS / f"{method.replace('+', '_')}.json"
        path.parent.mkdir(exist_ok=True)
        _write_atomic(path, json.dumps(spec, indent=2) + "\n")
        return path

    def write_text(self, name: str, text: str) -> Path:
        """Write a file of the folder atomically and return its path."""
        path = self.path / name
        _write_atomic(path, text)
        return path

    def _read_manifest(self) -> dict[str, Any] | None:
        path = self.path / MANIFEST
        if not path.is_file():
            if any((self.path / name).exists() for name in (*OUTPUT_FILES, PARTS)):
                raise SpecError(
                    f"{self.path} holds outputs without a {MANIFEST}; choose another "
                    "--out folder, or pass --overwrite to delete them"
                )
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise SpecError(
                f"{path} is unreadable ({error}); pass --overwrite to start over"
            ) from None

    def _clear(self) -> None:
        for name in (MANIFEST, *OUTPUT_FILES):
            (self.path / name).unlink(missing_ok=True)
        for folder in (PARTS, SPECS):
            shutil.rmtree(self.path / folder, ignore_errors=True)


def _read_records(part: Path) -> list[BatchRecord]:
    records = []
    lines = part.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        try:
            records.append(BatchRecord(**json.loads(line)))
        except (ValueError, TypeError):
            # A process killed while writing leaves a torn last line; its batch
            # is decoded again.
            logger.warning("ignoring the unreadable line %d of %s", number, part)
    return records


def _ends_without_newline(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) != b"\n"


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
