"""Decoder tests: guided logits, KV cache reuse, tracked values and token RMs."""

from __future__ import annotations

import pytest
import torch
from conftest import model_ref
from manual import (
    load_lm,
    load_token_rm,
    load_tokenizer,
    next_logits,
    prompt_ids,
    sequence_log_prob,
    token_rm_q,
)

from ivg_core import Decoder, GuidedGenerator, SearchError

PROMPTS = ["The movie", "I did not expect such a long and", ""]
BASE_TEMPLATE = "Review: {prompt}"


def make_decoder(generator: GuidedGenerator, prompts=PROMPTS) -> Decoder:
    return Decoder(generator, list(prompts), seeds=list(range(len(prompts))))


def response(decoder: Decoder, row: int) -> list[int]:
    return decoder.tokens[row, : decoder.lengths[row]].tolist()


def prompt_of(decoder: Decoder, row: int) -> str:
    return decoder.prompts[row // decoder.rows_per_prompt]


@pytest.fixture
def eft_spec(gpt2_base, gpt2_tuned, gpt2_untuned, llama_base):
    """EFT with two tuned models (GPT-2 and a BOS-adding Llama) on a GPT-2 base."""
    return {
        "base": model_ref(gpt2_base, template=BASE_TEMPLATE),
        "sampling": {"max_new_tokens": 12, "seed": 5},
        "token_guides": [
            {
                "kind": "eft",
                "tuned": [model_ref(gpt2_tuned), model_ref(llama_base)],
                "untuned": model_ref(gpt2_untuned),
                "tuned_weights": [1.0, 0.5],
                "weight": 0.7,
            }
        ],
        "chunk_scorers": [
            {
                "kind": "implicit_value",
                "tuned": model_ref(gpt2_tuned),
                "untuned": model_ref(gpt2_untuned),
                "beta": 0.5,
            }
        ],
        "search": {
            "kind": "chunk_beam_search",
            "beam_width": 2,
            "num_candidates": 2,
            "chunk_length": 3,
        },
    }


def manual_eft_logits(decoder, row, folders, weight, tuned_weights):
    """Return base + weight · Σ w_i (tuned_i − untuned) recomputed from scratch."""
    base, tuned, untuned = folders
    prompt = prompt_of(decoder, row)
    ids = response(decoder, row)
    base_logits = next_logits(
        load_lm(base), prompt_ids(base, BASE_TEMPLATE, prompt) + ids
    )
    untuned_logits = next_logits(
        load_lm(untuned), prompt_ids(untuned, "{prompt}", prompt) + ids
    )
    total = base_logits.clone()
    for folder, tuned_weight in zip(tuned, tuned_weights, strict=True):
        tuned_logits = next_logits(
            load_lm(folder), prompt_ids(folder, "{prompt}", prompt) + ids
        )
        total += weight * tuned_weight * (tuned_logits - untuned_logits)
    return total


def check_guided_logits(decoder, folders):
    logits = decoder.guided_logits()
    for position, row in enumerate(decoder.active_rows.tolist()):
        expected = manual_eft_logits(decoder, row, folders, 0.7, [1.0, 0.5])
        torch.testing.assert_close(logits[position], expected, atol=1e-6, rtol=1e-6)


def test_eft_logits_match_hand_computation(
    eft_spec, registry, gpt2_base, gpt2_tuned, llama_base, gpt2_untuned
):
    decoder = make_decoder(GuidedGenerator(eft_spec, registry))
    folders = (gpt2_base, [gpt2_tuned, llama_base], gpt2_untuned)

    check_guided_logits(decoder, folders)
    decoder.decode(3)
    check_guided_logits(decoder, folders)


def test_cached_logits_match_recompute_after_reorder(
    eft_spec, registry, gpt2_base, gpt2_tuned, llama_base, gpt2_untuned
):
    decoder = make_decoder(GuidedGenerator(eft_spec, registry))
    folders = (gpt2_base, [gpt2_tuned, llama_base], gpt2_untuned)
    decoder.decode(3)

    # Reverse the rows of every prompt's block: each row takes another's cache.
    block = decoder.rows_per_prompt
    index = torch.arange(decoder.num_rows).reshape(-1, block).flip(1).reshape(-1)
    before = decoder.tokens.clone()
    decoder.select(index)
    assert torch.equal(decoder.tokens, before[index])

    decoder.decode(2)
    check_guided_logits(decoder, folders)


def test_base_logits_match_recompute_on_llama(llama_base, registry):
    spec = {"base": model_ref(llama_base), "sampling": {"max_new_tokens": 8}}
    decoder = make_decoder(GuidedGenerator(spec, registry))
    model = load_lm(llama_base)
    decoder.decode(4)

    logits = decoder.guided_logits()
    for position, row in enumerate(decoder.active_rows.tolist()):
        ids = prompt_ids(llama_base, "{prompt}", prompt_of(decoder, row))
        expected = next_logits(model, ids + response(decoder, row))
        torch.testing.assert_close(logits[position], expected, atol=1e-4, rtol=1e-4)


def test_implicit_value_accumulated_equals_recompute(
    eft_spec, registry, gpt2_tuned, gpt2_untuned
):
    decoder = make_decoder(GuidedGenerator(eft_spec, registry))
    tuned, untuned = load_lm(gpt2_tuned), load_lm(gpt2_untuned)
    decoder.decode(3)
    decoder.score()
    decoder.select(
        torch.arange(decoder.num_rows).reshape(-1, 4)[:, [1, 1, 0, 3]].reshape(-1)
    )
    decoder.decode(3)

    scores = decoder.score()
    for row in range(decoder.num_rows):
        prompt, ids = prompt_of(decoder, row), response(decoder, row)
        context = prompt_ids(gpt2_tuned, "{prompt}", prompt)
        expected = 0.5 * (
            sequence_log_prob(tuned, context, ids)
            - sequence_log_prob(untuned, context, ids)
        )
        assert scores[row].item() == pytest.approx(expected, abs=1e-8)


def test_implicit_value_text_scorer_equals_recompute(
    gpt2_base, other_vocab_gpt2, registry
):
    """A scorer with another tokenizer scores the response text in its own tokens."""
    spec = {
        "base": model_ref(gpt2_base),
        "sampling": {"max_new_tokens": 6, "seed": 1},
        "chunk_scorers": [
            {
                "kind": "implicit_value",
                "tuned": model_ref(other_vocab_gpt2, template="Text: {prompt}"),
                "reference_free": True,
                "average_log_prob": True,
            }
        ],
        "search": {"kind": "best_of_n", "n": 2},
    }
    decoder = make_decoder(GuidedGenerator(spec, registry))
    model, tokenizer = load_lm(other_vocab_gpt2), load_tokenizer(other_vocab_gpt2)
    decoder.decode(None)

    scores = decoder.score()
    for row in range(decoder.num_rows):
        context = prompt_ids(
            other_vocab_gpt2, "Text: {prompt}", prompt_of(decoder, row)
        )
        ids = tokenizer(decoder.response_text(row), add_special_tokens=False)[
            "input_ids"
        ]
        expected = sequence_log_prob(model, context, ids) / max(len(ids), 1)
        assert scores[row].item() == pytest.approx(expected, abs=1e-8)


@pytest.fixture
def token_rm_spec(gpt2_base, gpt2_token_rm):
    rm = model_ref(gpt2_token_rm, template="Q: {prompt}")
    return {
        "base": model_ref(gpt2_base),
        "sampling": {"max_new_tokens": 6, "seed": 2},
        "token_guides": [{"kind": "token_rm", "model": rm, "weight": 0.3}],
        "chunk_scorers": [{"kind": "token_rm", "model": rm}],
        "search": {"kind": "chunk_beam_search", "beam_width": 1, "num_candidates": 3},
    }


def test_token_rm_guide_matches_manual_q(
    token_rm_spec, registry, gpt2_base, gpt2_token_rm
):
    decoder = make_decoder(GuidedGenerator(token_rm_spec, registry))
    backbone, head = load_token_rm(gpt2_token_rm)
    base = load_lm(gpt2_base)
    decoder.decode(2)

    logits = decoder.guided_logits()
    for position, row in enumerate(decoder.active_rows.tolist()):
        prompt, ids = prompt_of(decoder, row), response(decoder, row)
        q = token_rm_q(
            backbone, head, prompt_ids(gpt2_token_rm, "Q: {prompt}", prompt) + ids
        )
        base_logits = next_logits(base, prompt_ids(gpt2_base, "{prompt}", prompt) + ids)
        torch.testing.assert_close(logits[position], base_logits + 0.3 * q)


def test_token_rm_scorer_reads_last_token_q(token_rm_spec, registry, gpt2_token_rm):
    decoder = make_decoder(GuidedGenerator(token_rm_spec, registry))
    backbone, head = load_token_rm(gpt2_token_rm)
    decoder.decode(4)

    scores = decoder.score()
    for row in range(decoder.num_rows):
        ids = response(decoder, row)
        context = prompt_ids(gpt2_token_rm, "Q: {prompt}", prompt_of(decoder, row))
        expected = token_rm_q(backbone, head, context + ids[:-1])[ids[-1]]
        assert scores[row].item() == pytest.approx(expected.item(), abs=1e-8)


def test_token_rm_layout_rejects_wrong_head_shape(
    tmp_path, gpt2_base, gpt2_token_rm, registry
):
    from safetensors.torch import load_file, save_file

    from ivg_core import ModelLoadError

    folder = tmp_path / "bad-rm"
    folder.mkdir()
    for item in gpt2_token_rm.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    state = load_file(str(folder / "model.safetensors"))
    state["score_head.weight"] = torch.zeros(state["score_head.weight"].shape[0], 7)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    rm_spec = {
        "base": model_ref(gpt2_base),
        "chunk_scorers": [{"kind": "token_rm", "model": model_ref(folder)}],
    }
    with pytest.raises(ModelLoadError, match=r"score_head\.weight .* shape \(\d+, 7\)"):
        GuidedGenerator(rm_spec, registry)


def test_select_rejects_rows_crossing_prompts(eft_spec, registry):
    decoder = make_decoder(GuidedGenerator(eft_spec, registry))
    index = torch.arange(decoder.num_rows)
    index[0] = decoder.rows_per_prompt

    with pytest.raises(SearchError, match="another prompt's block"):
        decoder.select(index)


def test_select_rejects_wrong_index_shape(eft_spec, registry):
    decoder = make_decoder(GuidedGenerator(eft_spec, registry))

    with pytest.raises(SearchError, match=r"shape \(3,\)"):
        decoder.select(torch.arange(3))


def test_finished_rows_leave_participant_caches(eft_spec, registry):
    eft_spec["sampling"]["stop_strings"] = ["e"]
    decoder = make_decoder(GuidedGenerator(eft_spec, registry))
    decoder.decode(None)

    assert decoder.finished.all()
    for state in decoder.states.values():
        if state.participant.level == "token":
            assert state.rows.numel() == 0
