"""The fast path must return what the reference path returns, token for token."""

from __future__ import annotations

import pytest
from conftest import model_ref

from ivg_core import GuidedGenerator
from ivg_core.chunk_update import ReferenceUpdater, TextUpdater

PROMPTS = ["The movie", "I did not expect such a long and", "", "A charming film"]
POSITIVE = "A glowing review: {prompt}"


def cbs(width=2, candidates=3, length=3) -> dict:
    return {
        "kind": "chunk_beam_search",
        "beam_width": width,
        "num_candidates": candidates,
        "chunk_length": length,
    }


def prompted_pair_spec(base, tuned, untuned, other_vocab, token_rm) -> dict:
    """EFT and implicit value from one model with two templates, as offline."""
    model = model_ref(base)
    positive = model_ref(base, template=POSITIVE)
    return {
        "base": model,
        "sampling": {"max_new_tokens": 10, "seed": 3, "temperature": 0.8},
        "token_guides": [
            {"kind": "eft", "tuned": positive, "untuned": model, "weight": 1.5}
        ],
        "chunk_scorers": [
            {"kind": "implicit_value", "tuned": positive, "untuned": model}
        ],
        "search": cbs(),
    }


def two_model_spec(base, tuned, untuned, other_vocab, token_rm) -> dict:
    return {
        "base": model_ref(base, template="Review: {prompt}"),
        "sampling": {"max_new_tokens": 9, "seed": 5, "top_p": 0.9},
        "token_guides": [
            {"kind": "eft", "tuned": model_ref(tuned), "untuned": model_ref(untuned)}
        ],
        "chunk_scorers": [
            {
                "kind": "implicit_value",
                "tuned": model_ref(tuned, template="Q: {prompt}"),
                "untuned": model_ref(untuned, template="Q: {prompt}"),
                "average_log_prob": True,
            }
        ],
        "search": cbs(2, 2, 2),
    }


def token_rm_spec(base, tuned, untuned, other_vocab, token_rm) -> dict:
    rm = model_ref(token_rm)
    return {
        "base": model_ref(base),
        "sampling": {"max_new_tokens": 8, "seed": 1, "top_k": 40},
        "token_guides": [{"kind": "token_rm", "model": rm, "weight": 0.2}],
        "chunk_scorers": [
            {"kind": "token_rm", "model": model_ref(token_rm, template="R: {prompt}")}
        ],
        "search": cbs(3, 2, 3),
    }


def other_vocab_spec(base, tuned, untuned, other_vocab, token_rm) -> dict:
    """Scorers with another tokenizer read the response text."""
    return {
        "base": model_ref(base),
        "sampling": {"max_new_tokens": 12, "seed": 7},
        "chunk_scorers": [
            {
                "kind": "implicit_value",
                "tuned": model_ref(other_vocab, template="T: {prompt}"),
                "reference_free": True,
            },
            {
                "kind": "lm_judge",
                "model": model_ref(other_vocab, template="Judge: {prompt}"),
                "suffix": "\nVerdict:",
                "positive": "good",
                "negative": "bad",
                "coefficient": 0.5,
            },
        ],
        "search": cbs(2, 2, 4),
    }


def stop_string_spec(base, tuned, untuned, other_vocab, token_rm) -> dict:
    spec = other_vocab_spec(base, tuned, untuned, other_vocab, token_rm)
    spec["sampling"]["stop_strings"] = ["e ", "."]
    spec["chunk_scorers"].append({"kind": "token_rm", "model": model_ref(token_rm)})
    return spec


def best_of_n_spec(base, tuned, untuned, other_vocab, token_rm) -> dict:
    spec = two_model_spec(base, tuned, untuned, other_vocab, token_rm)
    spec["search"] = {"kind": "best_of_n", "n": 5}
    return spec


SPECS = [
    pytest.param(prompted_pair_spec, id="prompted_pair"),
    pytest.param(two_model_spec, id="eft_implicit_value"),
    pytest.param(token_rm_spec, id="token_rm"),
    pytest.param(other_vocab_spec, id="other_vocab_scorers"),
    pytest.param(stop_string_spec, id="stop_strings"),
    pytest.param(best_of_n_spec, id="best_of_n"),
]


@pytest.fixture
def folders(gpt2_base, gpt2_tuned, gpt2_untuned, other_vocab_gpt2, gpt2_token_rm):
    return gpt2_base, gpt2_tuned, gpt2_untuned, other_vocab_gpt2, gpt2_token_rm


@pytest.mark.parametrize("make_spec", SPECS)
def test_fast_path_equals_reference(folders, registry, make_spec):
    generator = GuidedGenerator(make_spec(*folders), registry)

    fast = generator.generate(PROMPTS)
    reference = generator.generate(PROMPTS, reference=True)

    assert [r.token_ids for r in fast] == [r.token_ids for r in reference]
    assert [r.text for r in fast] == [r.text for r in reference]
    assert [r.finish_reason for r in fast] == [r.finish_reason for r in reference]
    for fast_result, reference_result in zip(fast, reference, strict=True):
        assert fast_result.scores == pytest.approx(reference_result.scores, abs=1e-9)


def test_reference_path_uses_no_scorer_cache(folders, registry):
    from ivg_core import Decoder

    generator = GuidedGenerator(other_vocab_spec(*folders), registry)
    fast = Decoder(generator, PROMPTS[:1], [0])
    reference = Decoder(generator, PROMPTS[:1], [0], reference=True)

    assert {type(u) for u in fast.updaters.values()} == {TextUpdater}
    assert {type(u) for u in reference.updaters.values()} == {ReferenceUpdater}
    assert all(p.level == "token" for p in reference.states)


def test_shared_model_runs_one_state(folders, registry):
    from ivg_core import Decoder

    generator = GuidedGenerator(prompted_pair_spec(*folders), registry)
    decoder = Decoder(generator, PROMPTS, [0, 1, 2, 3])

    states = set(decoder.states.values())
    assert len(generator.participants) == 2
    assert len(states) == 1
    [state] = states
    assert len(state.members) == 2
    assert state.output.shape[0] == 2 * decoder.num_rows


def test_stop_string_inside_kept_text(gpt2_base, other_vocab_gpt2):
    """A stop string that began in text a scorer already kept is rescored."""
    import types

    from manual import load_tokenizer
    from test_stopping import ScriptSpec, ivg_register_token_guides  # noqa: F401

    from ivg_core import create_registry

    plugin = types.ModuleType("script_plugin")
    plugin.ivg_register_token_guides = ivg_register_token_guides
    registry = create_registry(plugins=[plugin])
    tokenizer = load_tokenizer(gpt2_base)
    first = tokenizer("xx abc zz", add_special_tokens=False)["input_ids"]
    rest = tokenizer("\nd end", add_special_tokens=False)["input_ids"]
    spec = {
        "base": model_ref(gpt2_base),
        "sampling": {"max_new_tokens": 16, "stop_strings": ["c zz\nd"]},
        "token_guides": [{"kind": "script", "scripts": [first + rest]}],
        "chunk_scorers": [
            {
                "kind": "implicit_value",
                "tuned": model_ref(other_vocab_gpt2),
                "reference_free": True,
            }
        ],
        "search": cbs(1, 2, len(first)),
    }
    generator = GuidedGenerator(spec, registry)

    [fast] = generator.generate(["p"])
    [reference] = generator.generate(["p"], reference=True)

    assert fast.finish_reason == "stop"
    assert fast.text == "xx ab"
    assert fast.scores == pytest.approx(reference.scores, abs=1e-9)
