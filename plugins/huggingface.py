"""Model source for Hugging Face Hub ids and local checkpoint folders."""

from __future__ import annotations

import logging
from pathlib import Path

from ivg_core import ModelRef, ModelSource, ResolvedModel, hookimpl

__all__ = ["HuggingFaceSource"]

logger = logging.getLogger(__name__)

LOCAL_PREFIXES = ("/", "./", "../", "~", ".\\", "..\\")


class HuggingFaceSource(ModelSource):
    """Hub ids such as 'openai-community/gpt2' and local checkpoint folders."""

    def check(self, ref: ModelRef) -> None:
        local = _local(ref)
        if ref.name_or_path.startswith(LOCAL_PREFIXES) and not local.is_dir():
            raise ValueError(
                f"local model folder {ref.name_or_path!r} does not exist; pass an "
                "existing checkpoint folder or a Hugging Face Hub id"
            )
        if local.is_dir() and not (local / "config.json").is_file():
            raise ValueError(
                f"folder {ref.name_or_path!r} has no config.json, so it is not a "
                "transformers checkpoint; pass the folder that save_pretrained wrote"
            )

    def resolve(self, ref: ModelRef) -> ResolvedModel:
        local = _local(ref)
        if local.is_dir():
            if ref.revision is not None:
                logger.warning(
                    "ignoring revision %r of the local folder %s",
                    ref.revision,
                    ref.name_or_path,
                )
            return ResolvedModel(path=str(local))
        return ResolvedModel(path=ref.name_or_path, revision=ref.revision)


def _local(ref: ModelRef) -> Path:
    return Path(ref.name_or_path).expanduser()


@hookimpl
def ivg_register_model_sources(register) -> None:
    register("huggingface", HuggingFaceSource())
