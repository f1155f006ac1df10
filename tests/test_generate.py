"""End-to-end tests of the Python API and the CLI on tiny real models."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import model_ref, write_gpt2

import ivg
from ivg_core import GuidedGenerator, VocabularyMismatchError

PROMPTS = ["The movie", "I loved", "Boring and", "A quiet drama"]


@pytest.fixture
def ivg_spec(gpt2_base, gpt2_tuned, gpt2_untuned, gpt2_token_rm):
    """EFT at the token level and a token RM at the chunk level."""
    return {
        "base": model_ref(gpt2_base, template="Review: {prompt}"),
        "sampling": {"max_new_tokens": 10, "seed": 7, "temperature": 0.7, "top_p": 0.9},
        "token_guides": [
            {
                "kind": "eft",
                "tuned": model_ref(gpt2_tuned),
                "untuned": model_ref(gpt2_untuned),
            }
        ],
        "chunk_scorers": [{"kind": "token_rm", "model": model_ref(gpt2_token_rm)}],
        "search": {
            "kind": "chunk_beam_search",
            "beam_width": 2,
            "num_candidates": 2,
            "chunk_length": 3,
        },
    }


def test_generate_same_seed_same_output(ivg_spec, registry):
    first = GuidedGenerator(ivg_spec, registry).generate(PROMPTS)
    second = GuidedGenerator(ivg_spec, registry).generate(PROMPTS)

    assert [r.to_dict() for r in first] == [r.to_dict() for r in second]


def test_generate_other_seed_other_output(ivg_spec, registry):
    first = GuidedGenerator(ivg_spec, registry).generate(PROMPTS)
    ivg_spec["sampling"]["seed"] = 8
    second = GuidedGenerator(ivg_spec, registry).generate(PROMPTS)

    assert [r.token_ids for r in first] != [r.token_ids for r in second]


def test_generate_result_independent_of_batch(ivg_spec, registry):
    generator = GuidedGenerator(ivg_spec, registry)
    together = generator.generate(PROMPTS)
    one_by_one = generator.generate(PROMPTS, batch_size=1)
    alone = generator.generate([PROMPTS[2]], prompt_ids=[2])
    reordered = generator.generate(PROMPTS[::-1], prompt_ids=[3, 2, 1, 0])

    assert [r.token_ids for r in one_by_one] == [r.token_ids for r in together]
    assert alone[0].token_ids == together[2].token_ids
    assert [r.token_ids for r in reordered[::-1]] == [r.token_ids for r in together]


def test_generate_result_fields(ivg_spec, registry):
    results = ivg.generate(ivg_spec, PROMPTS[:2], registry=registry)

    assert [r.prompt for r in results] == PROMPTS[:2]
    for result in results:
        assert result.finish_reason in {"eos", "stop", "length"}
        assert 0 < len(result.token_ids) <= 10
        assert set(result.scores) == {"token_rm"}
        assert result.score == pytest.approx(result.scores["token_rm"])
        assert isinstance(result.text, str)


def test_eft_zero_weight_equals_unguided(ivg_spec, registry):
    unguided = dict(ivg_spec, token_guides=[])
    zero_weight = dict(
        ivg_spec, token_guides=[dict(ivg_spec["token_guides"][0], weight=0.0)]
    )
    zero_tuned = dict(
        ivg_spec, token_guides=[dict(ivg_spec["token_guides"][0], tuned_weights=[0.0])]
    )

    expected = [
        r.token_ids for r in GuidedGenerator(unguided, registry).generate(PROMPTS)
    ]
    for spec in (zero_weight, zero_tuned):
        results = GuidedGenerator(spec, registry).generate(PROMPTS)
        assert [r.token_ids for r in results] == expected


def test_eft_changes_output_when_weighted(ivg_spec, registry):
    unguided = dict(ivg_spec, token_guides=[])
    strong = dict(
        ivg_spec, token_guides=[dict(ivg_spec["token_guides"][0], weight=5.0)]
    )

    plain = GuidedGenerator(unguided, registry).generate(PROMPTS)
    guided = GuidedGenerator(strong, registry).generate(PROMPTS)

    assert [r.token_ids for r in guided] != [r.token_ids for r in plain]


def test_vocabulary_mismatch_rejected_before_loading(
    tmp_path, gpt2_base, gpt2_untuned, other_vocab_gpt2, registry
):
    # Unreadable weights: loading any model first would raise another error.
    broken = tmp_path / "broken-other-vocab"
    broken.mkdir()
    for item in other_vocab_gpt2.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    spec = {
        "base": model_ref(gpt2_base),
        "token_guides": [
            {
                "kind": "eft",
                "tuned": model_ref(broken),
                "untuned": model_ref(gpt2_untuned),
            }
        ],
    }

    with pytest.raises(VocabularyMismatchError) as caught:
        GuidedGenerator(spec, registry)
    assert str(broken) in str(caught.value)
    assert str(gpt2_base) in str(caught.value)


def test_vocabulary_mismatch_allowed_for_chunk_scorer(
    gpt2_base, other_vocab_gpt2, registry
):
    spec = {
        "base": model_ref(gpt2_base),
        "sampling": {"max_new_tokens": 4},
        "chunk_scorers": [
            {
                "kind": "implicit_value",
                "tuned": model_ref(other_vocab_gpt2),
                "reference_free": True,
            }
        ],
        "search": {"kind": "best_of_n", "n": 2},
    }

    results = GuidedGenerator(spec, registry).generate(["x"])

    assert results[0].scores["implicit_value"] < 0


def test_shared_model_loaded_once(gpt2_base, registry):
    """The same folder as base and as prompted untuned model shares one model."""
    spec = {
        "base": model_ref(gpt2_base),
        "token_guides": [
            {
                "kind": "eft",
                "tuned": model_ref(gpt2_base, template="Be positive. {prompt}"),
                "untuned": model_ref(gpt2_base),
            }
        ],
    }
    generator = GuidedGenerator(spec, registry)

    assert len(generator.participants) == 2
    assert generator.participants[0].model is generator.participants[1].model


def test_untuned_equal_to_base_reuses_base(gpt2_base, gpt2_tuned, registry):
    spec = {
        "base": model_ref(gpt2_base),
        "token_guides": [
            {
                "kind": "eft",
                "tuned": model_ref(gpt2_tuned),
                "untuned": model_ref(gpt2_base),
            }
        ],
    }
    generator = GuidedGenerator(spec, registry)

    assert [p.ref.name_or_path for p in generator.participants] == [
        str(gpt2_base),
        str(gpt2_tuned),
    ]
    assert generator.guides[0].guide.untuned is generator.base


def test_cli_generate_prints_json_lines(tmp_path, ivg_spec):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(ivg_spec))
    command = [sys.executable, "-m", "ivg", "generate", "--spec", str(spec_file)]
    command += ["--prompt", "The movie", "--prompt", "I loved"]

    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)

    assert completed.returncode == 0, completed.stderr
    lines = [json.loads(line) for line in completed.stdout.splitlines()]
    assert [line["prompt"] for line in lines] == ["The movie", "I loved"]
    expected = GuidedGenerator(ivg_spec).generate(["The movie", "I loved"])
    assert [line["token_ids"] for line in lines] == [r.token_ids for r in expected]


def test_cli_reports_invalid_spec(tmp_path, gpt2_base):
    spec_file = tmp_path / "spec.json"
    spec = {"base": model_ref(gpt2_base), "sampling": {"temperature": -1}}
    spec_file.write_text(json.dumps(spec))
    command = [sys.executable, "-m", "ivg", "generate", "--spec", str(spec_file)]

    completed = subprocess.run(
        [*command, "--prompt", "x"], capture_output=True, text=True, timeout=300
    )

    assert completed.returncode == 1
    assert "sampling.temperature" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_cli_plugins_lists_builtin_kinds():
    completed = subprocess.run(
        [sys.executable, "-m", "ivg", "plugins", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert completed.returncode == 0, completed.stderr
    listing = {entry["name"]: entry for entry in json.loads(completed.stdout)}
    assert listing["eft"]["kinds"] == {"token_guides": ["eft"]}
    assert listing["chunk_beam_search"]["kinds"]["search_strategies"] == [
        "sampling",
        "best_of_n",
        "chunk_beam_search",
    ]
    assert all(entry["builtin"] for entry in listing.values())


def test_generate_empty_prompt_works(tmp_path, bpe, registry):
    folder = write_gpt2(tmp_path / "extra", bpe, seed=9)
    results = GuidedGenerator({"base": model_ref(folder)}, registry).generate([""])

    assert len(results[0].token_ids) >= 1


def test_device_map_equals_single_device(ivg_spec, registry):
    """device_map spreads layers with accelerate; on one CPU it changes nothing."""
    mapped = {
        **ivg_spec,
        "base": {**ivg_spec["base"], "device": "auto", "device_map": "auto"},
    }

    expected = GuidedGenerator(ivg_spec, registry).generate(PROMPTS[:2])
    results = GuidedGenerator(mapped, registry).generate(PROMPTS[:2])

    assert [r.token_ids for r in results] == [r.token_ids for r in expected]


def test_device_map_with_device_rejected(ivg_spec, registry):
    from ivg_core import SpecError

    spec = {**ivg_spec, "base": {**ivg_spec["base"], "device_map": "auto"}}

    with pytest.raises(
        SpecError, match="device 'cpu' and device_map 'auto' are both set"
    ):
        GuidedGenerator(spec, registry)
