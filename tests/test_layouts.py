"""Reward model checkpoint layouts: Llama token RMs, sequence scores, padding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import BOS, EOS, _gpt2_config, _llama_config, model_ref, save_tokenizer
from manual import load_lm, load_tokenizer, next_logits, prompt_ids
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, processors
from transformers import (
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2Model,
    LlamaConfig,
    LlamaModel,
    PreTrainedTokenizerFast,
)

from ivg_core import (
    BuildContext,
    Decoder,
    GuidedGenerator,
    ModelLoadError,
    SpecError,
)
from ivg_core.models import ModelStore
from ivg_plugins.classifier import ClassifierEvaluatorSpec
from ivg_plugins.sequence_rm import SequenceRMEvaluatorSpec

HIDDEN = 32
PROMPTS = ["The movie", "I did not expect such a long and", ""]
RM_TEMPLATE = "Q: {prompt}"
SUMMARY_TEMPLATE = "POST: {prompt}\nTL;DR: "
POSTS = [
    "A charming film about friendship.",
    "Boring, predictable and far too long. Save your money. The jokes fall flat "
    "and the effects look cheap; I left before the end.",
    "Worst",
    "",
]
SUMMARIES = [" fun film", " dull and long, skip it", "", " great acting"]
BACKBONES = {
    "gpt2": (GPT2Model, GPT2Config, "transformer."),
    "llama": (LlamaModel, LlamaConfig, "model."),
}


def bos_tokenizer(bpe: Tokenizer) -> Tokenizer:
    """Return a copy of the shared tokenizer that adds BOS, as Llama's does."""
    with_bos = Tokenizer.from_str(bpe.to_str())
    bos_id = with_bos.token_to_id(BOS)
    with_bos.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, bos_id)]
    )
    return with_bos


def write_head_checkpoint(
    folder: Path,
    bpe: Tokenizer,
    backbone: str,
    head_shape: tuple[int, ...] | None,
    architecture: str,
    seed: int,
) -> Path:
    """Write a backbone under its prefix and a random ``score_head.weight``.

    ``head_shape`` None writes no head. Llama checkpoints get a tokenizer that
    adds BOS.
    """
    torch.manual_seed(seed)
    vocab_size = bpe.get_vocab_size()
    if backbone == "gpt2":
        config = _gpt2_config(vocab_size, folder)
    else:
        config = _llama_config(vocab_size)
    assert config.hidden_size == HIDDEN
    config.architectures = [architecture]
    model_class, _, prefix = BACKBONES[backbone]
    model = model_class(config)
    state = {f"{prefix}{k}": v.contiguous() for k, v in model.state_dict().items()}
    if head_shape is not None:
        state["score_head.weight"] = torch.randn(head_shape)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(folder)
    tokenizer = bos_tokenizer(bpe) if backbone == "llama" else bpe
    save_tokenizer(tokenizer, folder, add_bos=backbone == "llama")
    return folder


def load_by_hand(folder: Path, backbone: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """Load a checkpoint's backbone and head weight without ivg, in float64."""
    model_class, config_class, prefix = BACKBONES[backbone]
    state = load_file(str(folder / "model.safetensors"))
    head = state.pop("score_head.weight").double()
    model = model_class(config_class.from_pretrained(folder))
    model.load_state_dict({k.removeprefix(prefix): v for k, v in state.items()})
    return model.double().eval(), head


@torch.no_grad()
def head_output(model: torch.nn.Module, head: torch.Tensor, ids: list[int]):
    """Return ``score_head @ hidden`` at the last of ``ids``, one unpadded pass."""
    hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
    return head @ hidden


def build_evaluator(spec_class, data: dict, registry):
    spec = spec_class.model_validate(data, context={"registry": registry})
    return spec.build(BuildContext({}, None, ModelStore(registry)))


def make_decoder(generator: GuidedGenerator, prompts: list[str]) -> Decoder:
    return Decoder(generator, list(prompts), seeds=list(range(len(prompts))))


def response(decoder: Decoder, row: int) -> list[int]:
    return decoder.tokens[row, : decoder.lengths[row]].tolist()


def prompt_of(decoder: Decoder, row: int) -> str:
    return decoder.prompts[row // decoder.rows_per_prompt]


@pytest.fixture(scope="session")
def llama_token_rm(tiny_dir, bpe, vocab_size) -> Path:
    return write_head_checkpoint(
        tiny_dir / "llama-token-rm",
        bpe,
        "llama",
        (vocab_size, HIDDEN),
        "LlamaModelForTokenScore",
        seed=21,
    )


@pytest.fixture(scope="session")
def score_model(tiny_dir, bpe):
    """Return a function that writes a sequence score model once per layout."""
    written: dict[tuple[str, int], Path] = {}

    def write(backbone: str, score_dim: int) -> Path:
        if (backbone, score_dim) not in written:
            written[backbone, score_dim] = write_head_checkpoint(
                tiny_dir / f"{backbone}-score-{score_dim}",
                bpe,
                backbone,
                (score_dim, HIDDEN),
                "LlamaModelForScore" if backbone == "llama" else "GPT2ModelForScore",
                seed=30 + score_dim,
            )
        return written[backbone, score_dim]

    return write


@pytest.fixture(scope="session")
def gpt2_classifier(tiny_dir, bpe) -> Path:
    """A random two-label GPT-2 classifier whose tokenizer pads on the left."""
    folder = tiny_dir / "gpt2-classifier"
    torch.manual_seed(40)
    config = _gpt2_config(bpe.get_vocab_size(), folder)
    config.num_labels = 2
    config.pad_token_id = bpe.token_to_id(EOS)
    config.id2label = {0: "NEGATIVE", 1: "POSITIVE"}
    config.label2id = {"NEGATIVE": 0, "POSITIVE": 1}
    GPT2ForSequenceClassification(config).save_pretrained(folder)
    PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=EOS, pad_token=EOS, padding_side="left"
    ).save_pretrained(folder)
    return folder


@pytest.fixture
def llama_token_rm_spec(llama_base, llama_token_rm) -> dict:
    rm = model_ref(llama_token_rm, template=RM_TEMPLATE)
    return {
        "base": model_ref(llama_base),
        "sampling": {"max_new_tokens": 6, "seed": 2},
        "token_guides": [{"kind": "token_rm", "model": rm, "weight": 0.3}],
        "chunk_scorers": [{"kind": "token_rm", "model": rm}],
        "search": {"kind": "chunk_beam_search", "beam_width": 1, "num_candidates": 3},
    }


def test_llama_token_rm_guide_matches_manual_q(
    llama_token_rm_spec, registry, llama_base, llama_token_rm
):
    decoder = make_decoder(GuidedGenerator(llama_token_rm_spec, registry), PROMPTS)
    model, head = load_by_hand(llama_token_rm, "llama")
    base = load_lm(llama_base)
    decoder.decode(2)

    logits = decoder.guided_logits()
    for position, row in enumerate(decoder.active_rows.tolist()):
        prompt, ids = prompt_of(decoder, row), response(decoder, row)
        context = prompt_ids(llama_token_rm, RM_TEMPLATE, prompt)
        q = head_output(model, head, context + ids)
        base_logits = next_logits(
            base, prompt_ids(llama_base, "{prompt}", prompt) + ids
        )
        torch.testing.assert_close(logits[position], base_logits + 0.3 * q)


def test_llama_token_rm_scorer_reads_last_q(
    llama_token_rm_spec, registry, llama_token_rm
):
    decoder = make_decoder(GuidedGenerator(llama_token_rm_spec, registry), PROMPTS)
    model, head = load_by_hand(llama_token_rm, "llama")
    decoder.decode(4)

    scores = decoder.score()
    for row in range(decoder.num_rows):
        ids = response(decoder, row)
        context = prompt_ids(llama_token_rm, RM_TEMPLATE, prompt_of(decoder, row))
        expected = head_output(model, head, context + ids[:-1])[ids[-1]]
        assert scores[row].item() == pytest.approx(expected.item(), abs=1e-8)


SCORE_CASES = [("gpt2", 1, 0), ("gpt2", 3, 2), ("llama", 1, 0), ("llama", 3, 1)]
SCORE_IDS = ["gpt2-dim1", "gpt2-dim3-col2", "llama-dim1", "llama-dim3-col1"]


def manual_sequence_score(
    folder: Path, backbone: str, texts: list[str], score_index: int, eos: bool
) -> list[float]:
    """Score each text alone at its last token, with EOS appended if ``eos``."""
    model, head = load_by_hand(folder, backbone)
    tokenizer = load_tokenizer(folder)
    scores = []
    for text in texts:
        ids = tokenizer(text)["input_ids"] + ([tokenizer.eos_token_id] if eos else [])
        scores.append(head_output(model, head, ids)[score_index].item())
    return scores


@pytest.mark.parametrize(
    ("backbone", "score_dim", "score_index"), SCORE_CASES, ids=SCORE_IDS
)
def test_sequence_rm_evaluator_matches_manual_score(
    score_model, registry, backbone, score_dim, score_index
):
    folder = score_model(backbone, score_dim)
    data = {
        "kind": "sequence_rm",
        "model": model_ref(folder, template=SUMMARY_TEMPLATE),
        "score_index": score_index,
    }
    evaluator = build_evaluator(SequenceRMEvaluatorSpec, data, registry)

    scores = evaluator.evaluate(POSTS, SUMMARIES)

    texts = [
        SUMMARY_TEMPLATE.replace("{prompt}", p) + s
        for p, s in zip(POSTS, SUMMARIES, strict=True)
    ]
    expected = manual_sequence_score(folder, backbone, texts, score_index, eos=False)
    assert scores == pytest.approx(expected, abs=1e-8)


@pytest.mark.parametrize(
    ("backbone", "score_dim", "score_index", "append_eos"),
    [("gpt2", 3, 2, False), ("llama", 3, 1, True)],
    ids=["gpt2-dim3", "llama-dim3-eos"],
)
def test_sequence_rm_scorer_matches_manual_score(
    score_model, gpt2_base, registry, backbone, score_dim, score_index, append_eos
):
    folder = score_model(backbone, score_dim)
    spec = {
        "base": model_ref(gpt2_base),
        "sampling": {"max_new_tokens": 4, "seed": 3},
        "chunk_scorers": [
            {
                "kind": "sequence_rm",
                "model": model_ref(folder, template=SUMMARY_TEMPLATE),
                "score_index": score_index,
                "append_eos": append_eos,
                "coefficient": 2.0,
            }
        ],
        "search": {"kind": "best_of_n", "n": 2},
    }
    decoder = make_decoder(GuidedGenerator(spec, registry), PROMPTS)
    decoder.decode(None)

    scores = decoder.score()

    texts = [
        SUMMARY_TEMPLATE.replace("{prompt}", prompt_of(decoder, row))
        + decoder.response_text(row)
        for row in range(decoder.num_rows)
    ]
    expected = manual_sequence_score(folder, backbone, texts, score_index, append_eos)
    assert scores.tolist() == pytest.approx([2.0 * e for e in expected], abs=1e-8)


@pytest.mark.parametrize("backbone", ["gpt2", "llama"], ids=["gpt2", "llama"])
def test_sequence_rm_append_eos_adds_one_token(score_model, registry, backbone):
    folder = score_model(backbone, 1)
    data = {
        "kind": "sequence_rm",
        "model": model_ref(folder, template=SUMMARY_TEMPLATE),
        "append_eos": True,
    }
    evaluator = build_evaluator(SequenceRMEvaluatorSpec, data, registry)
    tokenizer = load_tokenizer(folder)
    text = SUMMARY_TEMPLATE.replace("{prompt}", POSTS[0]) + SUMMARIES[0]

    ids = evaluator.rm.encode(POSTS[0], SUMMARIES[0])
    [score] = evaluator.evaluate(POSTS[:1], SUMMARIES[:1])

    assert ids == tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    [expected] = manual_sequence_score(folder, backbone, [text], 0, eos=True)
    assert score == pytest.approx(expected, abs=1e-8)


def test_sequence_rm_truncation_keeps_end(score_model, registry):
    folder = score_model("llama", 1)
    data = {"kind": "sequence_rm", "model": model_ref(folder), "append_eos": True}
    evaluator = build_evaluator(SequenceRMEvaluatorSpec, data, registry)
    tokenizer = load_tokenizer(folder)
    post = " ".join(POSTS[:2]) * 20
    full = tokenizer(post + SUMMARIES[1])["input_ids"] + [tokenizer.eos_token_id]
    window = evaluator.rm.window

    ids = evaluator.rm.encode(post, SUMMARIES[1])
    [score] = evaluator.evaluate([post], [SUMMARIES[1]])

    assert len(full) > window
    assert ids == [tokenizer.bos_token_id] + full[len(full) - window + 1 :]
    model, head = load_by_hand(folder, "llama")
    assert score == pytest.approx(head_output(model, head, ids)[0].item(), abs=1e-8)


def test_sequence_rm_rejects_bad_score_index(score_model, registry):
    data = {
        "kind": "sequence_rm",
        "model": model_ref(score_model("gpt2", 3)),
        "score_index": 3,
    }

    with pytest.raises(SpecError, match=r"score_index 3 .* 3 outputs.* 0 and 2"):
        build_evaluator(SequenceRMEvaluatorSpec, data, registry)


def one_at_a_time(evaluator) -> torch.Tensor:
    return torch.tensor(
        [
            evaluator.evaluate([p], [s])[0]
            for p, s in zip(POSTS, SUMMARIES, strict=True)
        ],
        dtype=torch.float64,
    )


def test_sequence_rm_batch_equals_single_texts(score_model, registry):
    folder = score_model("gpt2", 3)
    data = {
        "kind": "sequence_rm",
        "model": model_ref(folder, template=SUMMARY_TEMPLATE),
        "score_index": 1,
    }
    evaluator = build_evaluator(SequenceRMEvaluatorSpec, data, registry)

    batched = torch.tensor(evaluator.evaluate(POSTS, SUMMARIES), dtype=torch.float64)

    torch.testing.assert_close(batched, one_at_a_time(evaluator), atol=1e-6, rtol=0)


def test_classifier_batch_equals_single_texts(gpt2_classifier, registry):
    data = {"kind": "classifier", "model": model_ref(gpt2_classifier)}
    evaluator = build_evaluator(ClassifierEvaluatorSpec, data, registry)

    batched = torch.tensor(evaluator.evaluate(POSTS, SUMMARIES), dtype=torch.float64)

    torch.testing.assert_close(batched, one_at_a_time(evaluator), atol=1e-6, rtol=0)


def test_token_rm_scorer_ignores_longer_neighbour(gpt2_base, gpt2_token_rm, registry):
    spec = {
        "base": model_ref(gpt2_base),
        "sampling": {"max_new_tokens": 5, "seed": 7},
        "chunk_scorers": [{"kind": "token_rm", "model": model_ref(gpt2_token_rm)}],
        "search": {"kind": "best_of_n", "n": 2},
    }
    generator = GuidedGenerator(spec, registry)
    alone = Decoder(generator, ["Worst"], seeds=[0])
    shared = Decoder(generator, ["Worst", " ".join(POSTS[:2]) * 2], seeds=[0, 1])
    alone.decode(None)
    shared.decode(None)

    alone_scores = alone.score()
    shared_scores = shared.score()[:2]

    assert torch.equal(shared.tokens[:2], alone.tokens)
    torch.testing.assert_close(shared_scores, alone_scores, atol=1e-6, rtol=0)


BAD_HEADS = [
    ("token_rm", None, r"no tensor 'score_head\.weight'.*shape \(vocab, 32\)"),
    ("sequence_rm", None, r"no tensor 'score_head\.weight'.*shape \(score_dim, 32\)"),
    (
        "sequence_rm",
        (3, 7),
        r"score_head\.weight of .* has shape \(3, 7\).*needs \(score_dim, 32\)",
    ),
    (
        "sequence_rm",
        (HIDDEN,),
        r"score_head\.weight of .* has shape \(32,\).*needs \(score_dim, 32\)",
    ),
]


@pytest.mark.parametrize(
    ("kind", "head_shape", "message"),
    BAD_HEADS,
    ids=["token-rm-missing", "sequence-missing", "sequence-columns", "sequence-1d"],
)
def test_bad_score_head_raises_load_error(
    tmp_path, bpe, gpt2_base, registry, kind, head_shape, message
):
    folder = write_head_checkpoint(
        tmp_path / "bad-head", bpe, "llama", head_shape, "LlamaModelForScore", seed=50
    )
    spec = {
        "base": model_ref(gpt2_base),
        "chunk_scorers": [{"kind": kind, "model": model_ref(folder)}],
    }

    with pytest.raises(ModelLoadError, match=message):
        GuidedGenerator(spec, registry)
