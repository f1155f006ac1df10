"""Stopping tests: stop strings, EOS and length, on scripted token sequences."""

from __future__ import annotations

import types
from typing import Literal

import pytest
import torch
from conftest import BOS, EOS, model_ref
from manual import load_tokenizer

from ivg_core import (
    Decoder,
    GuidedGenerator,
    TokenGuide,
    TokenGuideSpec,
    create_registry,
    hookimpl,
)


class ScriptSpec(TokenGuideSpec):
    """Test guide that forces each prompt's rows to emit a fixed token list."""

    kind: Literal["script"] = "script"
    scripts: list[list[int]]

    def build(self, context):
        return ScriptGuide(self.scripts)


class ScriptGuide(TokenGuide):
    def __init__(self, scripts):
        self.scripts = scripts

    def adjust(self, decoder):
        rows = decoder.active_rows
        adjustment = torch.full((len(rows), decoder.generator.vocab_size), -torch.inf)
        for i, row in enumerate(rows.tolist()):
            script = self.scripts[row // decoder.rows_per_prompt]
            if decoder.steps < len(script):
                adjustment[i, script[decoder.steps]] = 0.0
            else:
                adjustment[i] = 0.0
        return adjustment.double()


@hookimpl
def ivg_register_token_guides(register):
    register(ScriptSpec)


@pytest.fixture
def script_registry():
    plugin = types.ModuleType("script_plugin")
    plugin.ivg_register_token_guides = ivg_register_token_guides
    return create_registry(plugins=[plugin])


@pytest.fixture
def tokenizer(gpt2_base):
    return load_tokenizer(gpt2_base)


def scripted_spec(base, scripts, stop_strings, max_new_tokens=16) -> dict:
    return {
        "base": model_ref(base),
        "sampling": {"max_new_tokens": max_new_tokens, "stop_strings": stop_strings},
        "token_guides": [{"kind": "script", "scripts": scripts}],
    }


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def split_stop_string(tokenizer, ids: list[int]) -> tuple[str, int]:
    """Return a two-character stop string that spans the boundary of two tokens.

    Also returns the position of the token that completes it.
    """
    for i in range(len(ids) - 1):
        left, right = tokenizer.decode(ids[i]), tokenizer.decode(ids[i + 1])
        if left and right:
            return left[-1] + right[0], i + 1
    raise AssertionError("no two adjacent tokens with text")


def test_stop_string_split_across_tokens(gpt2_base, tokenizer, script_registry):
    ids = encode(tokenizer, "zq one two three")
    stop, completing = split_stop_string(tokenizer, ids)
    text = tokenizer.decode(ids)
    assert text.find(stop) + len(stop) > len(tokenizer.decode(ids[:completing]))

    spec = scripted_spec(gpt2_base, [ids], [stop])
    [result] = GuidedGenerator(spec, script_registry).generate(["p"])

    assert result.finish_reason == "stop"
    assert result.token_ids == ids[: completing + 1]
    assert result.text == text[: text.find(stop)]


def test_stop_strings_end_rows_individually(gpt2_base, tokenizer, script_registry):
    stopping = encode(tokenizer, "great movie. Then more")
    going_on = encode(tokenizer, "no stop here at all ever")
    spec = scripted_spec(
        gpt2_base, [stopping, going_on], [". T"], max_new_tokens=len(going_on)
    )

    first, second = GuidedGenerator(spec, script_registry).generate(["a", "b"])

    assert first.finish_reason == "stop"
    assert first.text == "great movie"
    assert second.finish_reason == "length"
    assert second.token_ids == going_on
    assert second.text == "no stop here at all ever"


def test_eos_ends_row_and_is_not_text(gpt2_base, tokenizer, script_registry):
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    words = encode(tokenizer, "short one")
    spec = scripted_spec(gpt2_base, [[*words, eos_id, *words]], [])

    [result] = GuidedGenerator(spec, script_registry).generate(["p"])

    assert result.finish_reason == "eos"
    assert result.token_ids == [*words, eos_id]
    assert result.text == "short one"


def test_special_token_stop_string_is_found(gpt2_base, tokenizer, script_registry):
    bos_id = tokenizer.convert_tokens_to_ids(BOS)
    words = encode(tokenizer, "the end")
    spec = scripted_spec(gpt2_base, [[*words, bos_id, *words]], [BOS])

    [result] = GuidedGenerator(spec, script_registry).generate(["p"])

    assert result.finish_reason == "stop"
    assert result.token_ids == [*words, bos_id]
    assert result.text == "the end"


def test_finished_row_keeps_its_text(gpt2_base, tokenizer, script_registry):
    stopping = encode(tokenizer, "ok. and then")
    going_on = encode(tokenizer, "keeps going and going on and on")
    spec = scripted_spec(gpt2_base, [stopping, going_on], ["."])
    decoder = Decoder(GuidedGenerator(spec, script_registry), ["a", "b"], [0, 1])

    decoder.decode(len(stopping))
    assert decoder.finished[0]
    frozen_tokens, frozen_length = decoder.tokens[0].clone(), int(decoder.lengths[0])
    frozen_text = decoder.response_text(0)
    decoder.decode(None)

    assert torch.equal(decoder.tokens[0], frozen_tokens)
    assert int(decoder.lengths[0]) == frozen_length
    assert decoder.response_text(0) == frozen_text == "ok"


def test_all_rows_finishing_first_step(gpt2_base, tokenizer, script_registry):
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    spec = scripted_spec(gpt2_base, [[eos_id], [eos_id]], [])

    results = GuidedGenerator(spec, script_registry).generate(["a", "b"])

    assert [r.finish_reason for r in results] == ["eos", "eos"]
    assert [r.text for r in results] == ["", ""]


def test_length_limit_ends_rows(gpt2_base, tokenizer, script_registry):
    ids = encode(tokenizer, "one two three four five six seven")
    spec = scripted_spec(gpt2_base, [ids], [], max_new_tokens=3)

    [result] = GuidedGenerator(spec, script_registry).generate(["p"])

    assert result.finish_reason == "length"
    assert result.token_ids == ids[:3]
