"""Reading guidance specs from TOML, YAML, JSON and Python files."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path
from typing import Any

from .errors import SpecError

__all__ = ["SPEC_SUFFIXES", "read_spec_file"]

SPEC_SUFFIXES = (".json", ".toml", ".yaml", ".yml", ".py")
PYTHON_SPEC_NAME = "spec"


def read_spec_file(path: Path) -> Any:
    """Return the spec data in a file, chosen by its suffix.

    A ``.py`` file is run, and its ``spec`` variable (a ``GuidanceSpec`` or a
    dict) is the spec.

    Raises:
        SpecError: the file is missing, unreadable or not valid in its format.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise SpecError(f"spec file {str(path)!r} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix not in SPEC_SUFFIXES:
        raise SpecError(
            f"spec file {str(path)!r} has the suffix {suffix!r}; use one of "
            f"{', '.join(SPEC_SUFFIXES)}"
        )
    if suffix == ".py":
        return _run_python(path)
    text = _read_text(path)
    try:
        return _parse(suffix, text)
    except ValueError as error:
        raise SpecError(
            f"spec file {str(path)!r} is not valid {suffix[1:]}: {error}"
        ) from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise SpecError(
            f"spec file {str(path)!r} is not valid UTF-8 ({error}); save it as UTF-8"
        ) from None


def _parse(suffix: str, text: str) -> Any:
    if suffix == ".json":
        return json.loads(text)
    if suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:
            import tomli as tomllib
        return tomllib.loads(text)
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(str(error)) from None


def _run_python(path: Path) -> Any:
    try:
        namespace = runpy.run_path(str(path))
    except Exception as error:  # the file is user code; any error is its own
        raise SpecError(
            f"running spec file {str(path)!r} failed: {type(error).__name__}: {error}"
        ) from error
    if PYTHON_SPEC_NAME not in namespace:
        raise SpecError(
            f"spec file {str(path)!r} defines no variable {PYTHON_SPEC_NAME!r}; "
            "assign the GuidanceSpec (or a dict) to spec"
        )
    return namespace[PYTHON_SPEC_NAME]
