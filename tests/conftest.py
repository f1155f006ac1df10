"""Shared fixtures: tiny real tokenizers and models written to disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Model,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as hf_logging

import ivg_core

hf_logging.disable_progress_bar()

EOS = "<|endoftext|>"
BOS = "<s>"
CORPUS = [
    "This movie was a wonderful surprise, with great acting and a moving story.",
    "The plot was dull and the dialogue was terrible; I left before the end.",
    "A charming film about friendship, family and the summer that changed them.",
    "Worst sequel ever made. The jokes fall flat and the effects look cheap.",
    "I loved every minute of it! The music, the colours, the cast: all superb.",
    "An honest, quiet drama that rewards patience. Highly recommended.",
    "Boring, predictable and far too long. Save your money.",
    "TL;DR: the film is fun, the ending is weak, the actors are great.",
]
OTHER_CORPUS = [
    "Quantum fields and gauge bosons interact through local symmetries.",
    "Photosynthesis converts light, water and carbon dioxide into sugar.",
    "The treaty ended the war and redrew the borders of the kingdom.",
]


def train_tokenizer(corpus: list[str], vocab_size: int, add_bos: bool) -> Tokenizer:
    """Train a byte-level BPE tokenizer; every byte string is encodable."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, BOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus * 4, trainer=trainer)
    if add_bos:
        bos_id = tokenizer.token_to_id(BOS)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", special_tokens=[(BOS, bos_id)]
        )
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, folder: Path, add_bos: bool) -> Path:
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS,
        bos_token=BOS if add_bos else None,
        pad_token=EOS,
    )
    wrapped.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def bpe() -> Tokenizer:
    return train_tokenizer(CORPUS, 320, add_bos=False)


@pytest.fixture(scope="session")
def vocab_size(bpe) -> int:
    return bpe.get_vocab_size()


def _gpt2_config(vocab_size: int, tokenizer_folder: Path) -> GPT2Config:
    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=256,
        n_embd=32,
        n_layer=2,
        n_head=4,
        bos_token_id=0,
        eos_token_id=0,
    )


def _llama_config(vocab_size: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=0,
    )


def write_gpt2(folder: Path, bpe: Tokenizer, seed: int) -> Path:
    """Write a tiny random GPT-2 LM with the shared tokenizer to ``folder``."""
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(_gpt2_config(bpe.get_vocab_size(), folder))
    model.save_pretrained(folder)
    save_tokenizer(bpe, folder, add_bos=False)
    return folder


def write_llama(folder: Path, bpe: Tokenizer, seed: int) -> Path:
    """Write a tiny random Llama LM whose tokenizer adds BOS to ``folder``."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(_llama_config(bpe.get_vocab_size()))
    model.save_pretrained(folder)
    with_bos = Tokenizer.from_str(bpe.to_str())
    bos_id = with_bos.token_to_id(BOS)
    with_bos.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, bos_id)]
    )
    save_tokenizer(with_bos, folder, add_bos=True)
    return folder


def write_gpt2_token_rm(folder: Path, bpe: Tokenizer, seed: int) -> Path:
    """Write a GPT-2 token reward model in the reference checkpoint layout."""
    torch.manual_seed(seed)
    config = _gpt2_config(bpe.get_vocab_size(), folder)
    config.architectures = ["GPT2ModelForTokenScore"]
    backbone = GPT2Model(config)
    head = torch.randn(bpe.get_vocab_size(), config.n_embd)
    state = {
        f"transformer.{k}": v.contiguous() for k, v in backbone.state_dict().items()
    }
    state["score_head.weight"] = head
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(folder)
    save_tokenizer(bpe, folder, add_bos=False)
    return folder


@pytest.fixture(scope="session")
def gpt2_base(tiny_dir, bpe) -> Path:
    return write_gpt2(tiny_dir / "gpt2-base", bpe, seed=1)


@pytest.fixture(scope="session")
def gpt2_tuned(tiny_dir, bpe) -> Path:
    return write_gpt2(tiny_dir / "gpt2-tuned", bpe, seed=2)


@pytest.fixture(scope="session")
def gpt2_tuned_b(tiny_dir, bpe) -> Path:
    return write_gpt2(tiny_dir / "gpt2-tuned-b", bpe, seed=4)


@pytest.fixture(scope="session")
def gpt2_untuned(tiny_dir, bpe) -> Path:
    return write_gpt2(tiny_dir / "gpt2-untuned", bpe, seed=3)


@pytest.fixture(scope="session")
def llama_base(tiny_dir, bpe) -> Path:
    return write_llama(tiny_dir / "llama-base", bpe, seed=5)


@pytest.fixture(scope="session")
def gpt2_token_rm(tiny_dir, bpe) -> Path:
    return write_gpt2_token_rm(tiny_dir / "gpt2-token-rm", bpe, seed=6)


@pytest.fixture(scope="session")
def other_vocab_gpt2(tiny_dir, vocab_size) -> Path:
    """A GPT-2 whose tokenizer has the base vocabulary size but other tokens."""
    other = train_tokenizer(OTHER_CORPUS, vocab_size, add_bos=False)
    assert other.get_vocab_size() == vocab_size
    return write_gpt2(tiny_dir / "gpt2-other-vocab", other, seed=7)


@pytest.fixture
def registry() -> ivg_core.Registry:
    """A fresh registry with the installed plugins."""
    return ivg_core.create_registry()


def model_ref(folder: Path, **fields) -> dict:
    """Return a model reference dict for a local folder, in float64 on the CPU."""
    return {"name_or_path": str(folder), "dtype": "float64", "device": "cpu", **fields}


def find_shared_data() -> Path:
    """Return the folder of real test data beside the checkout.

    ``IVG_SHARED_DATA`` overrides the search; otherwise the first ``shared/data``
    folder in a parent of this file wins, then ``/work/shared/data``.
    """
    if os.environ.get("IVG_SHARED_DATA"):
        return Path(os.environ["IVG_SHARED_DATA"])
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared" / "data"
    return Path("/work/shared/data")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    folder = find_shared_data()
    assert folder.is_dir(), f"test data not found at {folder}; set IVG_SHARED_DATA"
    return folder


@pytest.fixture(scope="session")
def imdb_csv(shared_data) -> Path:
    return shared_data / "imdb" / "imdb_reviews_2000.csv"


@pytest.fixture(scope="session")
def embedded_cache(tmp_path_factory) -> Path:
    """A cache folder for converted embedded models, shared by the session.

    Tests that use embedded models set ``IVG_CACHE_DIR`` to it; the first such
    test converts each model, later ones reuse the conversion.
    """
    return tmp_path_factory.mktemp("ivg-cache")
