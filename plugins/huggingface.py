"""Model source for Hugging Face Hub ids and local checkpoint folders."""

from __future__ import annotations

from pathlib import Path

from ivg_core import ModelRef, ModelSource, ResolvedModel, hookimpl

__all__ = ["HuggingFaceSource"]

LOCAL_PREFIXES = ("/", "./", "../", "~", ".\\", "..\\")


class HuggingFaceSource(ModelSource):
    """Hub ids such as 'openai-community/gpt2' and local checkpoint folders."""

    def check(self, ref: ModelRef) -> None:
        if ref.name_or_path.startswith(LOCAL_PREFIXES) and not _local(ref).is_dir():
            raise ValueError(
                f"local model folder {ref.name_or_path!r} does not exist; pass an "
                "existing checkpoint folder or a Hugging Face Hub id"
            )

    def resolve(self, ref: ModelRef) -> ResolvedModel:
        local = _local(ref)
        if local.is_dir():
            return ResolvedModel(path=str(local))
        return ResolvedModel(path=ref.name_or_path, revision=ref.revision)


def _local(ref: ModelRef) -> Path:
    return Path(ref.name_or_path).expanduser()


@hookimpl
def ivg_register_model_sources(register) -> None:
    register("huggingface", HuggingFaceSource())
