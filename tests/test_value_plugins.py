"""Tests of the offline value plugins: lm_judge, classifier and vader."""

from __future__ import annotations

import pytest
import torch
from conftest import model_ref
from manual import load_lm, load_tokenizer, prompt_ids
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    GPT2Config,
    GPT2ForSequenceClassification,
    PreTrainedTokenizerFast,
)

from ivg_core import BuildContext, Decoder, GuidedGenerator, SpecError
from ivg_core.models import ModelStore
from ivg_plugins.classifier import ClassifierEvaluatorSpec
from ivg_plugins.vader import VaderEvaluatorSpec

PROMPTS = ["The movie", "I loved"]
SUFFIX = "\nTL;DR:"


def judge_spec(base, judge, template="Review: {prompt}") -> dict:
    return {
        "base": model_ref(base),
        "sampling": {"max_new_tokens": 6, "seed": 4},
        "chunk_scorers": [
            {
                "kind": "lm_judge",
                "model": model_ref(judge, template=template),
                "suffix": SUFFIX,
                "positive": "great",
                "negative": "dull",
            }
        ],
        "search": {
            "kind": "chunk_beam_search",
            "beam_width": 1,
            "num_candidates": 2,
            "chunk_length": 3,
        },
    }


def manual_judge(folder, decoder, row, response_ids) -> float:
    tokenizer = load_tokenizer(folder)
    model = load_lm(folder)
    prompt = decoder.prompts[row // decoder.rows_per_prompt]
    suffix = tokenizer(SUFFIX, add_special_tokens=False)["input_ids"]
    ids = prompt_ids(folder, "Review: {prompt}", prompt) + response_ids + suffix
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1].double()
    log_probs = torch.log_softmax(logits, -1)
    positive = tokenizer("great", add_special_tokens=False)["input_ids"][0]
    negative = tokenizer("dull", add_special_tokens=False)["input_ids"][0]
    return float(log_probs[positive] - log_probs[negative])


def test_lm_judge_same_vocab_matches_manual(gpt2_base, gpt2_tuned, registry):
    decoder = Decoder(
        GuidedGenerator(judge_spec(gpt2_base, gpt2_tuned), registry), PROMPTS, [0, 1]
    )
    decoder.decode(3)
    decoder.score()
    decoder.decode(3)

    scores = decoder.score()
    for row in range(decoder.num_rows):
        ids = decoder.tokens[row, : decoder.lengths[row]].tolist()
        expected = manual_judge(gpt2_tuned, decoder, row, ids)
        assert scores[row].item() == pytest.approx(expected, abs=1e-8)


def test_lm_judge_other_vocab_reads_text(gpt2_base, other_vocab_gpt2, registry):
    spec = judge_spec(gpt2_base, other_vocab_gpt2)
    decoder = Decoder(GuidedGenerator(spec, registry), PROMPTS, [0, 1])
    tokenizer = load_tokenizer(other_vocab_gpt2)
    decoder.decode(4)

    scores = decoder.score()
    for row in range(decoder.num_rows):
        text = decoder.response_text(row)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        expected = manual_judge(other_vocab_gpt2, decoder, row, ids)
        assert scores[row].item() == pytest.approx(expected, abs=1e-8)


def test_lm_judge_keeps_own_participant(gpt2_base, registry):
    """A judge on the base model with the base template gets its own cache."""
    spec = judge_spec(gpt2_base, gpt2_base, template="{prompt}")
    generator = GuidedGenerator(spec, registry)

    levels = sorted(p.level for p in generator.participants)
    assert levels == ["chunk", "token"]
    assert generator.participants[0].model is generator.participants[1].model


def test_lm_judge_rejects_equal_labels(gpt2_base, registry):
    spec = judge_spec(gpt2_base, gpt2_base)
    spec["chunk_scorers"][0]["negative"] = "great"

    with pytest.raises(SpecError, match="positive and negative are both 'great'"):
        GuidedGenerator(spec, registry)


WORDS = ["[PAD]", "[UNK]", "the", "movie", "was", "wonderful", "awful", "plot"]
POLARITY = {"wonderful": 1.0, "awful": -1.0}


@pytest.fixture(scope="session")
def sentiment_classifier(tmp_path_factory):
    """A GPT-2 classifier whose weights read the polarity of the last word.

    With no transformer layers, the hidden state of the last token is its
    embedding after the final layer norm; dimension 0 carries the polarity.
    """
    folder = tmp_path_factory.mktemp("classifier")
    vocab = {word: i for i, word in enumerate(WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]"
    ).save_pretrained(folder)

    config = GPT2Config(
        vocab_size=len(WORDS),
        n_embd=2,
        n_layer=0,
        n_head=1,
        n_positions=64,
        num_labels=2,
        pad_token_id=0,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    model = GPT2ForSequenceClassification(config)
    with torch.no_grad():
        model.transformer.wpe.weight.zero_()
        model.transformer.wte.weight.zero_()
        for word, polarity in POLARITY.items():
            model.transformer.wte.weight[vocab[word]] = torch.tensor(
                [polarity, -polarity]
            )
        model.score.weight.copy_(torch.tensor([[-1.0, 1.0], [1.0, -1.0]]))
    model.save_pretrained(folder)
    return folder


def build_evaluator(spec_class, data, registry):
    spec = spec_class.model_validate(data, context={"registry": registry})
    return spec.build(BuildContext({}, None, ModelStore(registry)))


def test_classifier_evaluator_sign(sentiment_classifier, registry):
    evaluator = build_evaluator(
        ClassifierEvaluatorSpec,
        {"kind": "classifier", "model": model_ref(sentiment_classifier)},
        registry,
    )

    positive, negative, neutral = evaluator.evaluate(
        ["the movie was", "the movie was", "the"], [" wonderful", " awful", " plot"]
    )

    assert positive > 0
    assert negative < 0
    assert positive == pytest.approx(-negative)
    assert neutral == pytest.approx(0.0, abs=1e-6)


def test_classifier_evaluator_swapped_labels(sentiment_classifier, registry):
    data = {
        "kind": "classifier",
        "model": model_ref(sentiment_classifier),
        "positive": "NEGATIVE",
        "negative": "POSITIVE",
    }
    evaluator = build_evaluator(ClassifierEvaluatorSpec, data, registry)

    [score] = evaluator.evaluate(["the movie was"], [" wonderful"])

    assert score < 0


def test_classifier_unknown_label_rejected(sentiment_classifier, registry):
    data = {
        "kind": "classifier",
        "model": model_ref(sentiment_classifier),
        "positive": "GOOD",
    }

    with pytest.raises(SpecError, match=r"no label 'GOOD'.*\['NEGATIVE', 'POSITIVE'\]"):
        build_evaluator(ClassifierEvaluatorSpec, data, registry)


def test_classifier_scorer_ranks_rows(gpt2_base, sentiment_classifier, registry):
    spec = {
        "base": model_ref(gpt2_base),
        "sampling": {"max_new_tokens": 3},
        "chunk_scorers": [
            {"kind": "classifier", "model": model_ref(sentiment_classifier)}
        ],
        "search": {"kind": "best_of_n", "n": 3},
    }
    generator = GuidedGenerator(spec, registry)
    decoder = Decoder(generator, ["the movie was"], [0])
    decoder.decode(None)

    scores = decoder.score()

    classifier = generator.scorers[0].scorer.classifier
    texts = ["the movie was" + decoder.response_text(row) for row in range(3)]
    assert torch.equal(scores, classifier.score_texts(texts))


def test_vader_evaluator_sign(registry):
    evaluator = build_evaluator(VaderEvaluatorSpec, {"kind": "vader"}, registry)

    positive, negative = evaluator.evaluate(
        ["This film was", "This film was"],
        [
            " wonderful, moving and beautifully acted. I loved it.",
            " awful, boring and a total waste.",
        ],
    )

    assert positive > 0.5
    assert negative < -0.5
