"""Spec validation tests: every invalid spec is rejected before any model loads."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pydantic
import pytest
from conftest import model_ref

import ivg_core
from ivg_core import GuidanceSpec, ModelRef, SamplingSpec, SpecError, load_spec
from ivg_plugins.chunk_beam_search import (
    BestOfNSpec,
    ChunkBeamSearchSpec,
    SamplingSearchSpec,
)
from ivg_plugins.eft import EFTSpec
from ivg_plugins.implicit_value import ImplicitValueSpec
from ivg_plugins.token_rm import TokenRMGuideSpec

MISSING_FOLDER = "/nonexistent/ivg-test-model"


@pytest.fixture(autouse=True)
def clear_plugin_environment(monkeypatch):
    """Validate against every installed plugin, whatever the caller's environment."""
    monkeypatch.delenv("IVG_LOAD_PLUGINS", raising=False)


@pytest.fixture
def folders(tmp_path) -> dict[str, Path]:
    """Local folders with only a config.json, standing in for checkpoints."""
    paths = {name: tmp_path / name for name in ("base", "tuned", "tuned_b", "untuned")}
    for path in paths.values():
        path.mkdir()
        (path / "config.json").write_text("{}")
    return paths


def error_line(message: str, path: str) -> str:
    """Return the line of a SpecError message that reports the field ``path``."""
    prefix = f"  {path}: "
    lines = [line for line in message.splitlines() if line.startswith(prefix)]
    assert lines, f"no error line for {path!r} in:\n{message}"
    return lines[0]


def implicit_value_scorer(ref: dict) -> dict:
    return {"kind": "implicit_value", "tuned": ref, "untuned": ref}


def chunk_beam_search_spec(ref: dict, **fields) -> dict:
    """Return a chunk_beam_search spec with one chunk scorer and ``fields``."""
    search = {"kind": "chunk_beam_search", **fields}
    return {
        "base": ref,
        "search": search,
        "chunk_scorers": [implicit_value_scorer(ref)],
    }


def eft_spec(ref: dict, **fields) -> dict:
    return {"base": ref, "token_guides": [{"kind": "eft", "untuned": ref, **fields}]}


def sampling_spec(ref: dict, **fields) -> dict:
    return {"base": ref, "sampling": fields}


def base_spec(ref: dict, **fields) -> dict:
    return {"base": {**ref, **fields}}


def token_rm_guide_spec(ref: dict, weight: float) -> dict:
    guide = {"kind": "token_rm", "model": ref, "weight": weight}
    return {"base": ref, "token_guides": [guide]}


# Each case: a function from a model reference dict to a spec dict, the path of
# the field at fault, a fragment of the problem, and the value as the message
# shows it (None where the value is a dict, which the message shows as {...}).
INVALID_SPECS = [
    pytest.param(
        lambda ref: {"base": ref, "beam": 4},
        "beam",
        "Extra inputs are not permitted",
        "4",
        id="unknown_top_level_field",
    ),
    pytest.param(
        lambda ref: {"base": ref, "sampling": {"temprature": 0.5}},
        "sampling.temprature",
        "Extra inputs are not permitted",
        "0.5",
        id="unknown_sampling_field",
    ),
    pytest.param(
        lambda ref: base_spec(ref, weights="x"),
        "base.weights",
        "Extra inputs are not permitted",
        "'x'",
        id="unknown_model_field",
    ),
    pytest.param(
        lambda ref: {},
        "base",
        "Field required",
        None,
        id="missing_base",
    ),
    pytest.param(
        lambda ref: sampling_spec(ref, temperature=-0.5),
        "sampling.temperature",
        "Input should be greater than or equal to 0",
        "-0.5",
        id="negative_temperature",
    ),
    pytest.param(
        lambda ref: sampling_spec(ref, top_p=0.0),
        "sampling.top_p",
        "Input should be greater than 0",
        "0.0",
        id="top_p_zero",
    ),
    pytest.param(
        lambda ref: sampling_spec(ref, top_p=1.5),
        "sampling.top_p",
        "Input should be less than or equal to 1",
        "1.5",
        id="top_p_above_one",
    ),
    pytest.param(
        lambda ref: sampling_spec(ref, top_k=0),
        "sampling.top_k",
        "Input should be greater than or equal to 1",
        "0",
        id="top_k_zero",
    ),
    pytest.param(
        lambda ref: sampling_spec(ref, max_new_tokens=0),
        "sampling.max_new_tokens",
        "Input should be greater than or equal to 1",
        "0",
        id="max_new_tokens_zero",
    ),
    pytest.param(
        lambda ref: sampling_spec(ref, seed=-1),
        "sampling.seed",
        "Input should be greater than or equal to 0",
        "-1",
        id="negative_seed",
    ),
    pytest.param(
        lambda ref: sampling_spec(ref, stop_strings=["\n\n", ""]),
        "sampling.stop_strings",
        "stop_strings contains an empty string",
        "['\\n\\n', '']",
        id="empty_stop_string",
    ),
    pytest.param(
        lambda ref: sampling_spec(ref, temperature=math.inf),
        "sampling.temperature",
        "Input should be a finite number",
        "inf",
        id="infinite_temperature",
    ),
    pytest.param(
        lambda ref: base_spec(ref, template="Question: "),
        "base.template",
        "template 'Question: ' contains '{prompt}' 0 times",
        "'Question: '",
        id="template_without_prompt",
    ),
    pytest.param(
        lambda ref: base_spec(ref, template="{prompt} and {prompt}"),
        "base.template",
        "template '{prompt} and {prompt}' contains '{prompt}' 2 times",
        "'{prompt} and {prompt}'",
        id="template_with_prompt_twice",
    ),
    pytest.param(
        lambda ref: base_spec(ref, name_or_path=MISSING_FOLDER),
        "base",
        f"local model folder {MISSING_FOLDER!r} does not exist",
        None,
        id="missing_local_folder",
    ),
    pytest.param(
        lambda ref: base_spec(ref, name_or_path=""),
        "base.name_or_path",
        "String should have at least 1 character",
        "''",
        id="empty_model_name",
    ),
    pytest.param(
        lambda ref: base_spec(ref, device="gpu"),
        "base.device",
        "device 'gpu' is not a torch device",
        "'gpu'",
        id="unknown_device_type",
    ),
    pytest.param(
        lambda ref: base_spec(ref, device="cuda:first"),
        "base.device",
        "device 'cuda:first' is not a torch device",
        "'cuda:first'",
        id="invalid_device_index",
    ),
    pytest.param(
        lambda ref: base_spec(ref, dtype="int8"),
        "base.dtype",
        "Input should be 'auto', 'float32', 'float64', 'float16' or 'bfloat16'",
        "'int8'",
        id="unknown_dtype",
    ),
    pytest.param(
        lambda ref: base_spec(ref, source="s3"),
        "base.source",
        "registered kinds: embedded, huggingface.",
        "'s3'",
        id="unknown_model_source",
    ),
    pytest.param(
        lambda ref: token_rm_guide_spec(ref, float("nan")),
        "token_guides.0.weight",
        "Input should be a finite number",
        "nan",
        id="nan_guide_weight",
    ),
    pytest.param(
        lambda ref: token_rm_guide_spec(ref, float("inf")),
        "token_guides.0.weight",
        "Input should be a finite number",
        "inf",
        id="inf_guide_weight",
    ),
    pytest.param(
        lambda ref: token_rm_guide_spec(ref, float("-inf")),
        "token_guides.0.weight",
        "Input should be a finite number",
        "-inf",
        id="negative_inf_guide_weight",
    ),
    pytest.param(
        lambda ref: {"base": ref, "token_guides": [{"kind": "logit_bias"}]},
        "token_guides.0.kind",
        "registered kinds: eft, token_rm.",
        None,
        id="unknown_token_guide_kind",
    ),
    pytest.param(
        lambda ref: {"base": ref, "token_guides": [{"model": ref}]},
        "token_guides.0.kind",
        "registered kinds: eft, token_rm.",
        None,
        id="token_guide_without_kind",
    ),
    pytest.param(
        lambda ref: {"base": ref, "token_guides": ["eft"]},
        "token_guides.0.kind",
        "expected a token guide spec or a dict with a 'kind' field",
        "'eft'",
        id="token_guide_not_dict",
    ),
    pytest.param(
        lambda ref: {"base": ref, "chunk_scorers": [{"kind": "reward_model"}]},
        "chunk_scorers.0.kind",
        "registered kinds: classifier, implicit_value, lm_judge, sequence_rm, "
        "token_rm.",
        None,
        id="unknown_chunk_scorer_kind",
    ),
    pytest.param(
        lambda ref: {"base": ref, "search": {"kind": "beam"}},
        "search.kind",
        "registered kinds: best_of_n, chunk_beam_search, sampling.",
        None,
        id="unknown_search_kind",
    ),
    pytest.param(
        lambda ref: chunk_beam_search_spec(ref, beam_width=0),
        "search.beam_width",
        "Input should be greater than or equal to 1",
        "0",
        id="chunk_beam_search_beam_width_zero",
    ),
    pytest.param(
        lambda ref: chunk_beam_search_spec(ref, num_candidates=0),
        "search.num_candidates",
        "Input should be greater than or equal to 1",
        "0",
        id="chunk_beam_search_num_candidates_zero",
    ),
    pytest.param(
        lambda ref: chunk_beam_search_spec(ref, chunk_length=0),
        "search.chunk_length",
        "Input should be greater than or equal to 1",
        "0",
        id="chunk_beam_search_chunk_length_zero",
    ),
    pytest.param(
        lambda ref: {"base": ref, "search": {"kind": "chunk_beam_search"}},
        "<spec>",
        "search 'chunk_beam_search' keeps 16 rows per prompt and ranks them, but "
        "chunk_scorers is empty",
        None,
        id="chunk_beam_search_without_chunk_scorers",
    ),
    pytest.param(
        lambda ref: {
            "base": ref,
            "search": {"kind": "chunk_beam_search", "beam_width": 1},
        },
        "<spec>",
        "keeps 4 rows per prompt and ranks them, but chunk_scorers is empty",
        None,
        id="chunk_beam_search_one_beam_without_chunk_scorers",
    ),
    pytest.param(
        lambda ref: {"base": ref, "search": {"kind": "best_of_n", "n": 3}},
        "<spec>",
        "search 'best_of_n' keeps 3 rows per prompt and ranks them",
        None,
        id="best_of_n_without_chunk_scorers",
    ),
    pytest.param(
        lambda ref: eft_spec(ref, tuned=[]),
        "token_guides.0.tuned",
        "List should have at least 1 item after validation, not 0",
        "[]",
        id="eft_empty_tuned",
    ),
    pytest.param(
        lambda ref: eft_spec(ref),
        "token_guides.0.tuned",
        "Field required",
        None,
        id="eft_without_tuned",
    ),
    pytest.param(
        lambda ref: eft_spec(ref, tuned=[ref, ref], tuned_weights=[1.0]),
        "token_guides.0",
        "tuned_weights has 1 value(s) for 2 tuned model(s)",
        None,
        id="eft_too_few_weights",
    ),
    pytest.param(
        lambda ref: eft_spec(ref, tuned=ref, tuned_weights=[1.0, 0.5]),
        "token_guides.0",
        "tuned_weights has 2 value(s) for 1 tuned model(s)",
        None,
        id="eft_too_many_weights",
    ),
    pytest.param(
        lambda ref: eft_spec(ref, tuned=ref, tuned_weights=[math.nan]),
        "token_guides.0.tuned_weights.0",
        "Input should be a finite number",
        "nan",
        id="eft_nan_tuned_weight",
    ),
    pytest.param(
        lambda ref: eft_spec(ref, tuned={**ref, "name_or_path": MISSING_FOLDER}),
        "token_guides.0.tuned.0",
        f"local model folder {MISSING_FOLDER!r} does not exist",
        None,
        id="eft_missing_tuned_folder",
    ),
    pytest.param(
        lambda ref: {
            "base": ref,
            "chunk_scorers": [{"kind": "implicit_value", "tuned": ref}],
        },
        "chunk_scorers.0",
        "untuned is empty; give the untuned reference model, or set reference_free",
        None,
        id="implicit_value_without_untuned",
    ),
    pytest.param(
        lambda ref: {
            "base": ref,
            "chunk_scorers": [{**implicit_value_scorer(ref), "beta": math.inf}],
        },
        "chunk_scorers.0.beta",
        "Input should be a finite number",
        "inf",
        id="implicit_value_infinite_beta",
    ),
    pytest.param(
        lambda ref: eft_spec(ref, tuned={**ref, "template": "Answer:"}),
        "token_guides.0.tuned.0.template",
        "template 'Answer:' contains '{prompt}' 0 times",
        "'Answer:'",
        id="eft_tuned_template_without_prompt",
    ),
]


@pytest.mark.parametrize(("make", "path", "problem", "shown"), INVALID_SPECS)
def test_invalid_spec_rejected(folders, make, path, problem, shown):
    spec = make(model_ref(folders["base"]))
    with pytest.raises(SpecError, match=re.escape(problem)) as excinfo:
        load_spec(spec)
    message = str(excinfo.value)
    assert re.match(r"invalid spec \(1 errors?\):\n", message)
    line = error_line(message, path)
    assert problem in line
    if shown is not None:
        assert line.endswith(f"(got {shown})")


# Unknown kinds: the message must name the kind that was given.
UNKNOWN_KIND_MESSAGES = [
    pytest.param(
        lambda ref: {"base": ref, "token_guides": [{"kind": "logit_bias"}]},
        "unknown token guide kind 'logit_bias'",
        id="token_guide",
    ),
    pytest.param(
        lambda ref: {"base": ref, "chunk_scorers": [{"kind": "reward_model"}]},
        "unknown chunk scorer kind 'reward_model'",
        id="chunk_scorer",
    ),
    pytest.param(
        lambda ref: {"base": ref, "search": {"kind": "beam"}},
        "unknown search strategy kind 'beam'",
        id="search_strategy",
    ),
    pytest.param(
        lambda ref: base_spec(ref, source="s3"),
        "unknown model source kind 's3'",
        id="model_source",
    ),
]


@pytest.mark.parametrize(("make", "fragment"), UNKNOWN_KIND_MESSAGES)
def test_unknown_kind_message_names_kind(folders, make, fragment):
    with pytest.raises(SpecError, match=re.escape(fragment)):
        load_spec(make(model_ref(folders["base"])))


def test_spec_error_lists_every_error(folders):
    spec = {
        "base": model_ref(folders["base"], device="gpu"),
        "sampling": {"temperature": -1.0, "top_k": 0},
        "token_guides": [
            {"kind": "token_rm", "model": model_ref(folders["base"]), "weight": 1.0},
            {
                "kind": "token_rm",
                "model": model_ref(folders["base"]),
                "weight": math.nan,
            },
        ],
        "search": {"kind": "chunk_beam_search", "beam_width": 0},
    }
    with pytest.raises(SpecError, match=r"invalid spec \(5 errors\):") as excinfo:
        load_spec(spec)
    message = str(excinfo.value)
    assert "(got 'gpu')" in error_line(message, "base.device")
    assert "(got -1.0)" in error_line(message, "sampling.temperature")
    assert "(got 0)" in error_line(message, "sampling.top_k")
    assert "(got nan)" in error_line(message, "token_guides.1.weight")
    assert "(got 0)" in error_line(message, "search.beam_width")
    assert "token_guides.0" not in message


def test_spec_error_lists_errors_of_two_items(folders):
    ref = model_ref(folders["base"])
    spec = {
        "base": ref,
        "token_guides": [
            {"kind": "eft", "tuned": [], "untuned": ref},
            {"kind": "token_rm", "model": ref, "weight": math.inf},
        ],
    }
    with pytest.raises(SpecError, match=r"invalid spec \(2 errors\):") as excinfo:
        load_spec(spec)
    message = str(excinfo.value)
    assert "at least 1 item" in error_line(message, "token_guides.0.tuned")
    assert "(got inf)" in error_line(message, "token_guides.1.weight")


def test_spec_error_is_value_error(folders):
    with pytest.raises(ValueError, match="sampling.seed"):
        load_spec(sampling_spec(model_ref(folders["base"]), seed=-5))


@pytest.mark.parametrize(
    "text",
    ["{not json", '{"base": }', ""],
    ids=["unquoted_key", "missing_value", "empty_text"],
)
def test_invalid_json_spec_rejected(text):
    with pytest.raises(SpecError, match="spec is not valid JSON: "):
        load_spec(text)


def test_invalid_json_file_rejected(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text("base: gpt2\n", encoding="utf-8")
    with pytest.raises(SpecError, match=r"spec\.json' is not valid json: "):
        load_spec(path)


def test_json_spec_not_object_rejected():
    with pytest.raises(SpecError, match=r"<spec>: Input should be a valid dictionary"):
        load_spec("[1, 2]")


def test_hub_id_validates_without_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = load_spec({"base": {"name_or_path": "openai-community/gpt2"}})
    assert spec.base.name_or_path == "openai-community/gpt2"
    assert spec.base.source == "huggingface"


# Valid specs.

VALID_BASE_FIELDS = [
    pytest.param({"device": "auto"}, id="device_auto"),
    pytest.param({"device": "cpu"}, id="device_cpu"),
    pytest.param({"dtype": "bfloat16"}, id="dtype_bfloat16"),
    pytest.param({"template": "Q: {prompt}\nA:"}, id="template_with_text"),
    pytest.param({"template": "{json} {prompt} }{"}, id="template_other_braces"),
    pytest.param({"revision": "main"}, id="revision"),
]


@pytest.mark.parametrize("fields", VALID_BASE_FIELDS)
def test_valid_model_fields_accepted(folders, fields):
    spec = load_spec({"base": model_ref(folders["base"], **fields)})
    for name, value in fields.items():
        assert getattr(spec.base, name) == value


VALID_SAMPLING_FIELDS = [
    pytest.param({"temperature": 0.0}, id="greedy_temperature"),
    pytest.param({"top_p": 1.0}, id="top_p_one"),
    pytest.param({"top_p": 1e-6}, id="top_p_tiny"),
    pytest.param({"top_k": 1}, id="top_k_one"),
    pytest.param({"max_new_tokens": 1}, id="one_new_token"),
    pytest.param({"seed": 0}, id="seed_zero"),
    pytest.param({"stop_strings": ["\n", "###"]}, id="stop_strings"),
]


@pytest.mark.parametrize("fields", VALID_SAMPLING_FIELDS)
def test_valid_sampling_fields_accepted(folders, fields):
    spec = load_spec(sampling_spec(model_ref(folders["base"]), **fields))
    for name, value in fields.items():
        assert getattr(spec.sampling, name) == value


def test_spec_defaults_sampling_search(folders):
    spec = load_spec({"base": model_ref(folders["base"])})
    assert spec.sampling == SamplingSpec()
    assert isinstance(spec.search, SamplingSearchSpec)
    assert spec.token_guides == []
    assert spec.chunk_scorers == []


def test_model_ref_defaults(folders):
    ref = ModelRef(name_or_path=str(folders["base"]))
    assert ref.source == "huggingface"
    assert ref.revision is None
    assert ref.dtype == "auto"
    assert ref.device == "auto"
    assert ref.template == "{prompt}"


def test_local_folder_from_fixture_accepted(gpt2_base):
    spec = load_spec({"base": model_ref(gpt2_base)})
    assert spec.base.name_or_path == str(gpt2_base)
    assert spec.base.dtype == "float64"


def full_spec_dict(folders: dict[str, Path]) -> dict:
    """Return a spec with every built-in kind, as plain data."""
    tuned = model_ref(folders["tuned"], template="User: {prompt}\nAssistant:")
    return {
        "base": model_ref(folders["base"]),
        "sampling": {"temperature": 0.7, "top_k": 20, "top_p": 0.9, "seed": 3},
        "token_guides": [
            {
                "kind": "eft",
                "tuned": [tuned, model_ref(folders["tuned_b"])],
                "untuned": model_ref(folders["untuned"]),
                "tuned_weights": [0.5, 1.5],
                "weight": 2.0,
            },
        ],
        "chunk_scorers": [
            {
                "kind": "implicit_value",
                "tuned": tuned,
                "untuned": model_ref(folders["untuned"]),
                "beta": 0.1,
                "name": "dpo",
            },
        ],
        "search": {
            "kind": "chunk_beam_search",
            "beam_width": 2,
            "num_candidates": 3,
            "chunk_length": 4,
        },
    }


def full_spec_objects(folders: dict[str, Path]) -> GuidanceSpec:
    """Return the spec of ``full_spec_dict`` built from Python objects."""
    tuned = ModelRef(
        **model_ref(folders["tuned"], template="User: {prompt}\nAssistant:")
    )
    untuned = ModelRef(**model_ref(folders["untuned"]))
    return GuidanceSpec(
        base=ModelRef(**model_ref(folders["base"])),
        sampling=SamplingSpec(temperature=0.7, top_k=20, top_p=0.9, seed=3),
        token_guides=[
            EFTSpec(
                tuned=[tuned, ModelRef(**model_ref(folders["tuned_b"]))],
                untuned=untuned,
                tuned_weights=[0.5, 1.5],
                weight=2.0,
            )
        ],
        chunk_scorers=[
            ImplicitValueSpec(tuned=tuned, untuned=untuned, beta=0.1, name="dpo")
        ],
        search=ChunkBeamSearchSpec(beam_width=2, num_candidates=3, chunk_length=4),
    )


def load_from_dict(data: dict, tmp_path: Path, registry) -> GuidanceSpec:
    return load_spec(data, registry=registry)


def load_from_json_string(data: dict, tmp_path: Path, registry) -> GuidanceSpec:
    return load_spec(json.dumps(data), registry=registry)


def load_from_json_file(data: dict, tmp_path: Path, registry) -> GuidanceSpec:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return load_spec(path, registry=registry)


SPEC_LOADERS = [
    pytest.param(load_from_dict, id="dict"),
    pytest.param(load_from_json_string, id="json_string"),
    pytest.param(load_from_json_file, id="json_file"),
]


@pytest.mark.parametrize("load", SPEC_LOADERS)
def test_loaded_spec_equals_object_spec(folders, tmp_path, registry, load):
    with registry.activate():
        expected = full_spec_objects(folders)
    assert load(full_spec_dict(folders), tmp_path, registry) == expected


@pytest.mark.parametrize("load", SPEC_LOADERS)
def test_loaded_spec_has_plugin_classes(folders, tmp_path, registry, load):
    spec = load(full_spec_dict(folders), tmp_path, registry)
    assert type(spec.token_guides[0]) is EFTSpec
    assert type(spec.chunk_scorers[0]) is ImplicitValueSpec
    assert type(spec.search) is ChunkBeamSearchSpec
    assert spec.token_guides[0].tuned_weights == [0.5, 1.5]
    assert spec.search.rows_per_prompt() == 6
    assert spec.sampling.top_k == 20


def test_object_spec_field_values(folders):
    spec = full_spec_objects(folders)
    guide = spec.token_guides[0]
    assert guide.kind == "eft"
    assert guide.weight == 2.0
    assert [ref.name_or_path for ref in guide.tuned] == [
        str(folders["tuned"]),
        str(folders["tuned_b"]),
    ]
    assert guide.tuned[0].template == "User: {prompt}\nAssistant:"
    assert spec.chunk_scorers[0].beta == 0.1
    assert spec.scorer_names() == ["dpo"]


def test_object_spec_rejects_invalid_field(folders):
    with pytest.raises(
        pydantic.ValidationError, match=re.escape("tuned_weights has 1 value(s)")
    ):
        EFTSpec(
            tuned=[ModelRef(**model_ref(folders["tuned"]))] * 2,
            untuned=ModelRef(**model_ref(folders["untuned"])),
            tuned_weights=[1.0],
        )


TUNED_FORMS = [
    pytest.param(lambda refs: refs[0], ["tuned"], id="single_dict"),
    pytest.param(lambda refs: ModelRef(**refs[0]), ["tuned"], id="single_model_ref"),
    pytest.param(lambda refs: [refs[0]], ["tuned"], id="list_of_one"),
    pytest.param(lambda refs: (refs[0], refs[1]), ["tuned", "tuned_b"], id="tuple"),
    pytest.param(lambda refs: refs, ["tuned", "tuned_b"], id="list_of_two"),
    pytest.param(
        lambda refs: [ModelRef(**refs[0]), refs[1]],
        ["tuned", "tuned_b"],
        id="list_of_object_and_dict",
    ),
]


@pytest.mark.parametrize(("make_tuned", "names"), TUNED_FORMS)
def test_eft_tuned_validates_to_list(folders, make_tuned, names):
    refs = [model_ref(folders["tuned"]), model_ref(folders["tuned_b"])]
    spec = load_spec(eft_spec(model_ref(folders["base"]), tuned=make_tuned(refs)))
    tuned = spec.token_guides[0].tuned
    assert isinstance(tuned, list)
    assert all(isinstance(ref, ModelRef) for ref in tuned)
    assert [ref.name_or_path for ref in tuned] == [str(folders[n]) for n in names]


@pytest.mark.parametrize(("make_tuned", "names"), TUNED_FORMS)
def test_eft_object_tuned_validates_to_list(folders, make_tuned, names):
    refs = [model_ref(folders["tuned"]), model_ref(folders["tuned_b"])]
    guide = EFTSpec(
        tuned=make_tuned(refs), untuned=ModelRef(**model_ref(folders["untuned"]))
    )
    assert [ref.name_or_path for ref in guide.tuned] == [str(folders[n]) for n in names]


def test_eft_nested_list_rejected(folders):
    ref = model_ref(folders["tuned"])
    with pytest.raises(SpecError, match=r"token_guides\.0\.tuned\.0: Input should"):
        load_spec(eft_spec(model_ref(folders["base"]), tuned=[[ref]]))


def test_implicit_value_reference_free_accepted(folders):
    ref = model_ref(folders["tuned"])
    spec = load_spec(
        {
            "base": model_ref(folders["base"]),
            "chunk_scorers": [
                {"kind": "implicit_value", "tuned": ref, "reference_free": True}
            ],
            "search": {"kind": "best_of_n", "n": 4},
        }
    )
    assert spec.chunk_scorers[0].untuned is None
    assert spec.chunk_scorers[0].reference_free is True
    assert isinstance(spec.search, BestOfNSpec)


def test_chunk_beam_search_one_row_unscored(folders):
    spec = load_spec(
        chunk_beam_search_spec(
            model_ref(folders["base"]), beam_width=1, num_candidates=1
        )
        | {"chunk_scorers": []}
    )
    assert spec.search.rows_per_prompt() == 1
    assert spec.search.needs_scores() is False


def test_chunk_beam_search_whole_responses(folders):
    spec = load_spec(
        chunk_beam_search_spec(model_ref(folders["base"]), chunk_length=None)
    )
    assert spec.search.chunk_length is None


def test_scorer_names_unique(folders):
    ref = model_ref(folders["tuned"])
    spec = load_spec(
        {
            "base": model_ref(folders["base"]),
            "chunk_scorers": [
                implicit_value_scorer(ref),
                implicit_value_scorer(ref),
                {**implicit_value_scorer(ref), "name": "a"},
            ],
        }
    )
    assert spec.scorer_names() == ["implicit_value", "implicit_value_2", "a"]


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(full_spec_dict, id="all_builtin_kinds"),
        pytest.param(lambda folders: {"base": model_ref(folders["base"])}, id="base"),
        pytest.param(
            lambda folders: {
                "base": model_ref(folders["base"]),
                "token_guides": [
                    {
                        "kind": "token_rm",
                        "model": model_ref(folders["tuned"]),
                        "weight": -0.5,
                    }
                ],
                "chunk_scorers": [
                    {"kind": "token_rm", "model": model_ref(folders["tuned"])}
                ],
                "search": {"kind": "best_of_n", "n": 2},
            },
            id="token_rm",
        ),
    ],
)
def test_model_dump_round_trips(folders, registry, make):
    spec = load_spec(make(folders), registry=registry)
    assert load_spec(spec.model_dump(), registry=registry) == spec
    assert load_spec(spec.model_dump_json(), registry=registry) == spec


def test_model_dump_keeps_plugin_fields(folders, registry):
    dumped = load_spec(full_spec_dict(folders), registry=registry).model_dump()
    assert dumped["token_guides"][0]["tuned_weights"] == [0.5, 1.5]
    assert len(dumped["token_guides"][0]["tuned"]) == 2
    assert dumped["chunk_scorers"][0]["beta"] == 0.1
    assert dumped["search"]["chunk_length"] == 4


def test_model_dump_keeps_guide_kinds(folders, registry):
    ref = model_ref(folders["tuned"])
    spec = load_spec(
        {
            "base": model_ref(folders["base"]),
            "token_guides": [{"kind": "token_rm", "model": ref}],
        },
        registry=registry,
    )
    dumped = spec.model_dump()
    assert dumped["token_guides"][0]["kind"] == "token_rm"
    assert dumped["token_guides"][0]["model"]["name_or_path"] == str(folders["tuned"])
    assert isinstance(spec.token_guides[0], TokenRMGuideSpec)


def test_spec_fields_frozen(folders):
    spec = load_spec({"base": model_ref(folders["base"])})
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        spec.sampling.temperature = 2.0


@pytest.mark.parametrize(
    ("template", "rendered"),
    [
        ("{prompt}", "great film"),
        ("Review: {prompt}\nSentiment:", "Review: great film\nSentiment:"),
        ('{"text": "{prompt}"}', '{"text": "great film"}'),
    ],
    ids=["bare", "prefix_and_suffix", "json_braces"],
)
def test_model_ref_render_replaces_prompt(folders, template, rendered):
    ref = ModelRef(**model_ref(folders["base"], template=template))
    assert ref.render("great film") == rendered


def test_with_template_validates(folders):
    ref = ModelRef(**model_ref(folders["base"]))
    assert ref.with_template("A: {prompt}").template == "A: {prompt}"
    with pytest.raises(pydantic.ValidationError, match="contains '{prompt}' 0 times"):
        ref.with_template("no prompt")


def test_default_registry_validates_without_argument(folders):
    assert ivg_core.current_registry() is ivg_core.default_registry()
    spec = load_spec(
        eft_spec(model_ref(folders["base"]), tuned=model_ref(folders["tuned"]))
    )
    assert isinstance(spec.token_guides[0], EFTSpec)


@pytest.mark.parametrize(
    ("device", "fragment"),
    [
        ("cuda:99", "device 'cuda:99'"),
        ("meta", "device 'meta' is not supported"),
    ],
    ids=["missing_cuda_device", "meta"],
)
def test_unusable_device_rejected(folders, device, fragment):
    spec = {"base": {**model_ref(folders["base"]), "device": device}}

    with pytest.raises(SpecError, match=re.escape(fragment)):
        load_spec(spec)
