"""Bad input, context windows, non-finite values and search invariants."""

from __future__ import annotations

import logging
import types
from typing import Literal

import pytest
import torch
from conftest import model_ref
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from manual import load_tokenizer

from ivg_core import (
    ChunkScorer,
    ChunkScorerSpec,
    Decoder,
    GuidanceError,
    GuidedGenerator,
    ModelLoadError,
    TokenGuide,
    TokenGuideSpec,
    create_registry,
    hookimpl,
)
from ivg_plugins.chunk_beam_search import ChunkBeamSearch


class ConstantGuideSpec(TokenGuideSpec):
    """Test guide that adds one value to every logit."""

    kind: Literal["constant"] = "constant"
    value: str

    def build(self, context):
        return ConstantGuide(float(self.value))


class ConstantGuide(TokenGuide):
    def __init__(self, value):
        self.value = value

    def adjust(self, decoder):
        rows = decoder.active_rows.numel()
        return torch.full(
            (rows, decoder.generator.vocab_size), self.value, dtype=torch.float64
        )


class ConstantScorerSpec(ChunkScorerSpec):
    """Test scorer that gives every row one value."""

    kind: Literal["constant"] = "constant"
    value: str

    def build(self, context):
        return ConstantScorer(float(self.value))


class ConstantScorer(ChunkScorer):
    def __init__(self, value):
        self.value = value

    def score(self, decoder, rows):
        return torch.full((rows.numel(),), self.value, dtype=torch.float64)


@hookimpl
def ivg_register_token_guides(register):
    register(ConstantGuideSpec)


@hookimpl
def ivg_register_chunk_scorers(register):
    register(ConstantScorerSpec)


@pytest.fixture
def constant_registry():
    plugin = types.ModuleType("constant_plugin")
    plugin.ivg_register_token_guides = ivg_register_token_guides
    plugin.ivg_register_chunk_scorers = ivg_register_chunk_scorers
    return create_registry(plugins=[plugin])


@pytest.mark.parametrize("value", ["nan", "inf"], ids=["nan", "plus_inf"])
def test_non_finite_guide_names_guide(gpt2_base, constant_registry, value):
    spec = {
        "base": model_ref(gpt2_base),
        "token_guides": [{"kind": "constant", "value": value}],
    }

    with pytest.raises(GuidanceError, match="token guide 'constant' returned NaN or"):
        GuidedGenerator(spec, constant_registry).generate(["x"])


def test_minus_inf_guide_bans_every_token(gpt2_base, constant_registry):
    spec = {
        "base": model_ref(gpt2_base),
        "token_guides": [{"kind": "constant", "value": "-inf"}],
    }

    with pytest.raises(GuidanceError, match="every token of row 0 has -inf logits"):
        GuidedGenerator(spec, constant_registry).generate(["x"])


def test_overflowing_weight_is_rejected(gpt2_base, constant_registry):
    spec = {
        "base": model_ref(gpt2_base),
        "token_guides": [{"kind": "constant", "value": "1e300", "weight": 1e300}],
    }

    with pytest.raises(GuidanceError, match="made the logits NaN or \\+inf"):
        GuidedGenerator(spec, constant_registry).generate(["x"])


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"], ids=["nan", "plus", "minus"])
def test_non_finite_score_names_scorer(gpt2_base, constant_registry, value):
    spec = {
        "base": model_ref(gpt2_base),
        "chunk_scorers": [{"kind": "constant", "value": value, "name": "flat"}],
        "search": {"kind": "best_of_n", "n": 2},
    }

    with pytest.raises(GuidanceError, match="chunk scorer 'flat' returned NaN or"):
        GuidedGenerator(spec, constant_registry).generate(["x"])


def test_top_k_one_equals_greedy(gpt2_base, gpt2_tuned, gpt2_untuned, registry):
    """Masking by top-k after mixing leaves a valid distribution, not NaN."""
    spec = {
        "base": model_ref(gpt2_base),
        "sampling": {"max_new_tokens": 8, "top_k": 1, "top_p": 0.5},
        "token_guides": [
            {
                "kind": "eft",
                "tuned": model_ref(gpt2_tuned),
                "untuned": model_ref(gpt2_untuned),
            }
        ],
    }
    greedy = {**spec, "sampling": {"max_new_tokens": 8, "temperature": 0}}

    sampled = GuidedGenerator(spec, registry).generate(["The movie", "I"])
    argmax = GuidedGenerator(greedy, registry).generate(["The movie", "I"])

    assert [r.token_ids for r in sampled] == [r.token_ids for r in argmax]


def test_long_prompt_cut_from_left(gpt2_base, registry, caplog):
    """GPT-2's window is 256 positions in the fixture; the prompt keeps its end."""
    tokenizer = load_tokenizer(gpt2_base)
    prompt = " ".join(["great film"] * 200)
    assert len(tokenizer(prompt)["input_ids"]) > 256
    spec = {"base": model_ref(gpt2_base), "sampling": {"max_new_tokens": 5}}

    with caplog.at_level(logging.WARNING, logger="ivg_core.decoder"):
        [result] = GuidedGenerator(spec, registry).generate([prompt])

    assert "keeping its last 255 tokens" in caplog.text
    assert result.finish_reason == "length"
    assert len(result.token_ids) == 1


def test_long_prompt_keeps_bos(llama_base, registry):
    spec = {"base": model_ref(llama_base), "sampling": {"max_new_tokens": 5}}
    generator = GuidedGenerator(spec, registry)
    prompt = " ".join(["great film"] * 200)

    decoder = Decoder(generator, [prompt], [0])

    [ids] = decoder.prompt_ids[generator.base]
    assert len(ids) == 255
    assert ids[0] == generator.base.tokenizer.bos_token_id


def test_max_new_tokens_past_window_stops(gpt2_base, registry):
    tokenizer = load_tokenizer(gpt2_base)
    prompt = "The movie was"
    prompt_length = len(tokenizer(prompt)["input_ids"])
    spec = {
        "base": model_ref(gpt2_base),
        "sampling": {"max_new_tokens": 400, "ignore_eos": True},
    }

    [result] = GuidedGenerator(spec, registry).generate([prompt])

    assert result.finish_reason == "length"
    assert len(result.token_ids) == 256 - prompt_length


def test_missing_hub_model_explains_offline(monkeypatch, registry):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = {"base": {"name_or_path": "ivg-missing-org/no-such-model"}}

    with pytest.raises(ModelLoadError) as raised:
        GuidedGenerator(spec, registry)

    message = str(raised.value)
    assert "ivg-missing-org/no-such-model" in message
    assert "Hugging Face Hub is unreachable" in message
    assert "local checkpoint folder" in message


class CheckedSearch(ChunkBeamSearch):
    """Chunk beam search that checks the search invariants at every selection."""

    def __init__(self, *args):
        super().__init__(*args)
        self.selections = 0

    def _select(self, scores, eligible, decoder):
        index = super()._select(scores, eligible, decoder)
        rows_per_prompt = decoder.rows_per_prompt
        for prompt in range(decoder.num_prompts):
            block = index[prompt * rows_per_prompt : (prompt + 1) * rows_per_prompt]
            assert ((block // rows_per_prompt) == prompt).all(), "a row crossed prompts"
            beams = block[:: self.num_candidates]
            assert len(set(beams.tolist())) == self.beam_width, "not W distinct beams"
            assert eligible[beams].all(), "an ineligible copy was kept"
        self.selections += 1
        return index


def check_copies(decoder, index, finished, tokens, lengths):
    """After select, row j holds exactly what row index[j] held."""
    assert torch.equal(decoder.lengths, lengths[index])
    assert torch.equal(decoder.tokens, tokens[index])
    assert torch.equal(decoder.finished, finished[index])


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    width=st.integers(1, 3),
    candidates=st.integers(1, 3),
    chunk=st.integers(1, 4),
    prompts=st.integers(1, 3),
    max_new_tokens=st.integers(1, 8),
    stop=st.sampled_from([[], ["e"], ["a", "."], [" "]]),
    seed=st.integers(0, 1000),
)
def test_search_bookkeeping_invariants(
    gpt2_base,
    gpt2_tuned,
    gpt2_untuned,
    registry,
    width,
    candidates,
    chunk,
    prompts,
    max_new_tokens,
    stop,
    seed,
):
    spec = {
        "base": model_ref(gpt2_base),
        "sampling": {
            "max_new_tokens": max_new_tokens,
            "stop_strings": stop,
            "seed": seed,
        },
        "chunk_scorers": [
            {
                "kind": "implicit_value",
                "tuned": model_ref(gpt2_tuned),
                "untuned": model_ref(gpt2_untuned),
            }
        ],
        "search": {
            "kind": "chunk_beam_search",
            "beam_width": width,
            "num_candidates": candidates,
            "chunk_length": chunk,
        },
    }
    generator = GuidedGenerator(spec, registry)
    texts = ["The movie", "I", "A quiet drama"][:prompts]
    decoder = Decoder(generator, texts, list(range(prompts)))
    search = CheckedSearch(width, candidates, chunk)
    original_select = decoder.select

    def select_and_check(index):
        before = (
            decoder.finished.clone(),
            decoder.tokens.clone(),
            decoder.lengths.clone(),
        )
        original_select(index)
        check_copies(decoder, index, *before)

    original_decode = decoder.decode

    def decode_and_check(max_steps=None):
        finished = decoder.finished.clone()
        tokens, lengths = decoder.tokens.clone(), decoder.lengths.clone()
        original_decode(max_steps)
        assert decoder.finished[finished].all(), "a finished row went on"
        assert torch.equal(decoder.tokens[finished], tokens[finished])
        assert torch.equal(decoder.lengths[finished], lengths[finished])

    decoder.select = select_and_check
    decoder.decode = decode_and_check
    chosen = search.run(decoder)

    assert decoder.finished.all()
    assert (decoder.lengths <= max_new_tokens).all()
    assert ((chosen // decoder.rows_per_prompt) == torch.arange(prompts)).all()
    totals = decoder.total_scores().reshape(prompts, -1)
    for prompt, row in enumerate(chosen.tolist()):
        assert decoder.total_scores()[row] == totals[prompt].max()
