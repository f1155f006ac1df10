"""Vocabulary checks for models whose logits are mixed token by token."""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedTokenizerBase

from .errors import VocabularyMismatchError
from .heads import TokenRewardModel

__all__ = ["check_shared_vocabulary", "output_size", "same_vocabulary"]


def same_vocabulary(
    base: PreTrainedTokenizerBase, other: PreTrainedTokenizerBase
) -> bool:
    """Return whether every base token string has the same id in ``other``."""
    if base is other:
        return True
    other_vocab = other.get_vocab()
    return all(other_vocab.get(token) == i for token, i in base.get_vocab().items())


def check_shared_vocabulary(
    base_name: str,
    base: PreTrainedTokenizerBase,
    other_name: str,
    other: PreTrainedTokenizerBase,
) -> None:
    """Raise unless ``other`` maps every token string of ``base`` to the same id.

    Comparing the token-to-id maps, not their sizes, catches tokenizers of equal
    size with different tokens (Mistral and Llama 2 both have 32,000 tokens).

    Raises:
        VocabularyMismatchError: names both models and a few differing tokens.
    """
    if same_vocabulary(base, other):
        return
    other_vocab = other.get_vocab()
    differing = [
        (token, i, other_vocab.get(token))
        for token, i in sorted(base.get_vocab().items(), key=lambda item: item[1])
        if other_vocab.get(token) != i
    ]
    examples = ", ".join(
        f"{token!r}: {i} vs {other_id}" for token, i, other_id in differing[:3]
    )
    raise VocabularyMismatchError(
        f"token-level model {other_name!r} does not share the vocabulary of the "
        f"base model {base_name!r}: {len(differing)} token strings map to other "
        f"ids ({examples}). Token-level guides need the base vocabulary; use a "
        "guide model of the same tokenizer family, or score with it at the chunk "
        "level instead."
    )


def output_size(model: nn.Module) -> int:
    """Return the size of a model's last output dimension (its vocabulary)."""
    if isinstance(model, TokenRewardModel):
        return model.score_head.out_features
    embeddings = model.get_output_embeddings()
    if embeddings is not None and hasattr(embeddings, "out_features"):
        return embeddings.out_features
    return model.config.get_text_config().vocab_size
