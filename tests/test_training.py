"""Training DPO guides and token reward models on tiny models."""

from __future__ import annotations

import json
import logging
import random

import pytest
import torch
from conftest import model_ref

from ivg_core import DataError, Decoder, GuidedGenerator
from ivg_core.training.common import CONFIG_FILE
from ivg_core.training.dpo import DPOOptions, train_dpo
from ivg_core.training.token_rm import TokenRMOptions, train_token_rm

WORDS = ["film", "plot", "cast", "story", "music", "scene", "ending", "actor"]


def labelled_reviews(count: int, seed: int = 0) -> list[dict]:
    """Reviews whose label is set by a word near their end."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        label = rng.random() < 0.5
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))]
        verdict = "great" if label else "awful"
        rows.append({"text": " ".join(words) + f" was {verdict}", "label": int(label)})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_dpo_loss_falls_and_checkpoint_loads(tmp_path, gpt2_base, registry):
    pairs = [
        {
            "prompt": f"The {word} was",
            "chosen": " great great",
            "rejected": " awful awful",
        }
        for word in WORDS * 4
    ]
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    out = tmp_path / "tuned"
    options = DPOOptions(
        model=str(gpt2_base),
        data=str(data),
        out=out,
        beta=0.5,
        learning_rate=5e-3,
        max_steps=24,
        batch_size=4,
        max_length=32,
    )

    result = train_dpo(options)

    losses = [entry["loss"] for entry in result["log"] if "loss" in entry]
    assert len(losses) == 24
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4
    assert json.loads((out / CONFIG_FILE).read_text())["command"] == "dpo"
    assert not (tmp_path / ".tuned.training").exists()
    spec = {
        "base": model_ref(gpt2_base),
        "sampling": {"max_new_tokens": 4},
        "token_guides": [
            {"kind": "eft", "tuned": model_ref(out), "untuned": model_ref(gpt2_base)}
        ],
    }
    assert len(GuidedGenerator(spec, registry).generate(["The film was"])) == 1


@pytest.fixture
def reviews(tmp_path):
    return write_jsonl(tmp_path / "reviews.jsonl", labelled_reviews(160))


def test_token_rm_learns_labels(tmp_path, reviews, gpt2_base):
    options = TokenRMOptions(
        model=str(gpt2_base),
        data=str(reviews),
        out=tmp_path / "rm",
        train_rows=120,
        epochs=30,
    )

    metrics = train_token_rm(options)

    assert metrics["accuracy"] >= 0.9
    assert metrics["train_accuracy"] >= 0.9
    saved = json.loads((tmp_path / "rm" / CONFIG_FILE).read_text())
    assert saved["metrics"] == metrics
    config = json.loads((tmp_path / "rm" / "config.json").read_text())
    assert config["architectures"] == ["GPT2ModelForTokenScore"]


def test_token_rm_checkpoint_scores_like_training(
    tmp_path, reviews, gpt2_base, registry
):
    """The saved head E·W gives the same last-token values as training reads."""
    out = tmp_path / "rm"
    train_token_rm(
        TokenRMOptions(
            model=str(gpt2_base), data=str(reviews), out=out, train_rows=120, epochs=10
        )
    )
    spec = {
        "base": model_ref(gpt2_base),
        "sampling": {"max_new_tokens": 5},
        "chunk_scorers": [{"kind": "token_rm", "model": model_ref(out)}],
        "search": {"kind": "best_of_n", "n": 4},
    }
    generator = GuidedGenerator(spec, registry)
    decoder = Decoder(generator, ["plot was"], [0])
    decoder.decode(None)

    scores = decoder.score()

    from safetensors.torch import load_file
    from transformers import GPT2Model

    state = load_file(str(out / "model.safetensors"))
    head = state.pop("score_head.weight").double()
    backbone = GPT2Model.from_pretrained(out, dtype=torch.float64).eval()
    tokenizer = generator.base.tokenizer
    for row in range(4):
        ids = (
            tokenizer("plot was")["input_ids"]
            + decoder.tokens[row, : decoder.lengths[row]].tolist()
        )
        with torch.no_grad():
            hidden = backbone(input_ids=torch.tensor([ids[:-1]])).last_hidden_state[
                0, -1
            ]
        assert scores[row].item() == pytest.approx(
            float(head[ids[-1]] @ hidden), abs=1e-6
        )


def test_token_rm_learns_pairs(tmp_path, gpt2_base):
    rows = [
        {"prompt": f"The {word} was", "chosen": " great", "rejected": " awful"}
        for word in WORDS * 10
    ]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    options = TokenRMOptions(
        model=str(gpt2_base),
        data=str(data),
        out=tmp_path / "rm",
        train_rows=60,
        epochs=20,
    )

    metrics = train_token_rm(options)

    assert metrics["pairwise_accuracy"] == 1.0


def test_token_rm_keeps_first_layers(tmp_path, reviews, gpt2_base):
    out = tmp_path / "rm"

    train_token_rm(
        TokenRMOptions(
            model=str(gpt2_base), data=str(reviews), out=out, layers=1, epochs=2
        )
    )

    assert json.loads((out / "config.json").read_text())["n_layer"] == 1


def test_token_rm_resumes_after_failure(
    tmp_path, reviews, gpt2_base, caplog, monkeypatch
):
    """A run that stops before saving keeps its cached states and its epochs."""
    import ivg_core.training.token_rm as module

    def crash(staging, target):
        raise KeyboardInterrupt("stopped while saving")

    out = tmp_path / "rm"
    options = TokenRMOptions(model=str(gpt2_base), data=str(reviews), out=out, epochs=2)
    with monkeypatch.context() as patch:
        patch.setattr(module, "replace_folder", crash)
        with pytest.raises(KeyboardInterrupt):
            train_token_rm(options)

    with caplog.at_level(logging.INFO, logger="ivg_core.training.token_rm"):
        train_token_rm(
            TokenRMOptions(model=str(gpt2_base), data=str(reviews), out=out, epochs=3)
        )

    assert "reading cached backbone states" in caplog.text
    assert "resuming token RM training after epoch 2" in caplog.text
    assert (out / "model.safetensors").is_file()


def test_offline_ivg_uses_trained_token_rm(tmp_path, monkeypatch):
    from ivg_tasks.sentiment import SentimentTask

    monkeypatch.setenv("IVG_CACHE_DIR", str(tmp_path))
    task = SentimentTask()
    assert task.spec("offline", "ivg")["chunk_scorers"][0]["kind"] == "lm_judge"
    folder = tmp_path / "models" / "token-rm-imdb"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")

    [scorer] = task.spec("offline", "ivg")["chunk_scorers"]

    assert scorer == {"kind": "token_rm", "model": {"name_or_path": str(folder)}}
    assert task.spec("paper", "ivg")["chunk_scorers"][0]["kind"] == "token_rm"
    assert task.spec("paper", "ivg")["chunk_scorers"][0]["model"]["name_or_path"] == (
        "chadlzx/gpt2-imdb-token-rm"
    )


def test_token_rm_trains_top_layer(tmp_path, reviews, gpt2_base):
    """Training the top layer changes it and leaves the frozen layers as they were."""
    from safetensors.torch import load_file

    out = tmp_path / "rm"
    metrics = train_token_rm(
        TokenRMOptions(
            model=str(gpt2_base),
            data=str(reviews),
            out=out,
            train_rows=120,
            train_layers=1,
            epochs=10,
        )
    )

    before = load_file(str(gpt2_base / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    layers = json.loads((out / "config.json").read_text())["n_layer"]
    top = f"h.{layers - 1}.mlp.c_fc.weight"
    assert metrics["accuracy"] >= 0.9
    assert not torch.equal(_tensor(before, top), _tensor(after, top))
    assert torch.equal(
        _tensor(before, "h.0.mlp.c_fc.weight"), _tensor(after, "h.0.mlp.c_fc.weight")
    )
    assert torch.equal(_tensor(before, "wte.weight"), _tensor(after, "wte.weight"))


def _tensor(state: dict, name: str) -> torch.Tensor:
    """Return a GPT-2 tensor whether its key has the 'transformer.' prefix or not."""
    return state.get(name, state.get(f"transformer.{name}"))


@pytest.mark.parametrize("backbone", ["gpt2_base", "llama_base"])
def test_token_rm_trained_layer_checkpoint_accuracy(
    tmp_path, reviews, backbone, request
):
    """The saved checkpoint reproduces the held-out accuracy measured in training."""
    folder = request.getfixturevalue(backbone)
    from transformers import AutoTokenizer

    from ivg_core.extension import ResolvedModel
    from ivg_core.heads import load_head_model

    out = tmp_path / "rm"
    metrics = train_token_rm(
        TokenRMOptions(
            model=str(folder),
            data=str(reviews),
            out=out,
            train_rows=120,
            train_layers=1,
            epochs=3,
        )
    )

    rows = labelled_reviews(160)[120:]
    resolved = ResolvedModel(str(out))
    model = load_head_model(resolved, "token_rm", torch.float32, torch.device("cpu"))
    tokenizer = AutoTokenizer.from_pretrained(out)
    correct = 0
    for row in rows:
        ids = tokenizer(row["text"])["input_ids"][:128]
        with torch.no_grad():
            values = model(input_ids=torch.tensor([ids[:-1]]), use_cache=False).logits
        correct += int((values[0, -1, ids[-1]] > 0).item() == bool(row["label"]))
    assert correct / len(rows) == pytest.approx(metrics["accuracy"])


def test_token_rm_too_many_trained_layers(tmp_path, reviews, gpt2_base):
    options = TokenRMOptions(
        model=str(gpt2_base), data=str(reviews), out=tmp_path / "rm", train_layers=2
    )

    with pytest.raises(DataError, match="train_layers=2 leaves no frozen layer"):
        train_token_rm(options)
