"""Search tests: chunk-level beam search, best-of-N and plain sampling."""

from __future__ import annotations

import pytest
import torch
from conftest import model_ref

from ivg_core import Decoder, GuidedGenerator
from ivg_plugins.chunk_beam_search import ChunkBeamSearch

PROMPTS = ["The movie", "A charming film about", "Worst"]


def spec_with(search: dict, base, tuned, untuned, max_new_tokens=10) -> dict:
    return {
        "base": model_ref(base),
        "sampling": {"max_new_tokens": max_new_tokens, "seed": 11},
        "chunk_scorers": [
            {
                "kind": "implicit_value",
                "tuned": model_ref(tuned),
                "untuned": model_ref(untuned),
            }
        ],
        "search": search,
    }


@pytest.fixture
def folders(gpt2_base, gpt2_tuned, gpt2_untuned):
    return gpt2_base, gpt2_tuned, gpt2_untuned


def run(spec: dict, registry, prompts=PROMPTS):
    return GuidedGenerator(spec, registry).generate(prompts)


class RecordingSearch(ChunkBeamSearch):
    """Chunk beam search that records scores, eligibility and choice per step."""

    def __init__(self, *args):
        super().__init__(*args)
        self.steps = []

    def _select(self, scores, eligible, decoder):
        index = super()._select(scores, eligible, decoder)
        self.steps.append((scores.clone(), eligible.clone(), index.clone()))
        return index


def test_cbs_keeps_top_w_rows_per_prompt(folders, registry):
    search = {"kind": "chunk_beam_search", "beam_width": 2, "num_candidates": 3}
    generator = GuidedGenerator(spec_with(search, *folders), registry)
    decoder = Decoder(generator, PROMPTS, seeds=[0, 1, 2])
    strategy = RecordingSearch(2, 3, 3)

    strategy.run(decoder)

    assert strategy.steps, "the search never selected"
    for scores, eligible, index in strategy.steps:
        for prompt in range(len(PROMPTS)):
            block = slice(prompt * 6, prompt * 6 + 6)
            chosen = index[block]
            assert ((chosen // 6) == prompt).all(), "a row crossed prompts"
            assert torch.equal(chosen, chosen[::3].repeat_interleave(3))
            masked = torch.where(eligible[block], scores[block], -torch.inf)
            top_two = set((torch.topk(masked, 2).indices + prompt * 6).tolist())
            assert set(chosen.tolist()) == top_two


def test_cbs_result_is_best_final_row(folders, registry):
    search = {"kind": "chunk_beam_search", "beam_width": 2, "num_candidates": 2}
    generator = GuidedGenerator(spec_with(search, *folders), registry)
    decoder = Decoder(generator, PROMPTS, seeds=[0, 1, 2])

    chosen = ChunkBeamSearch(2, 2, 4).run(decoder)

    totals = decoder.total_scores().reshape(len(PROMPTS), 4)
    for prompt, row in enumerate(chosen.tolist()):
        assert row // 4 == prompt
        assert decoder.total_scores()[row] == totals[prompt].max()


def test_cbs_single_row_equals_sampling(folders, registry):
    sampled = run(spec_with({"kind": "sampling"}, *folders), registry)
    search = {
        "kind": "chunk_beam_search",
        "beam_width": 1,
        "num_candidates": 1,
        "chunk_length": 2,
    }
    searched = run(spec_with(search, *folders), registry)

    assert [r.token_ids for r in searched] == [r.token_ids for r in sampled]
    assert [r.text for r in searched] == [r.text for r in sampled]
    assert [r.scores for r in searched] == [r.scores for r in sampled]


def test_best_of_n_equals_cbs_without_chunks(folders, registry):
    best_of_n = run(spec_with({"kind": "best_of_n", "n": 4}, *folders), registry)
    search = {
        "kind": "chunk_beam_search",
        "beam_width": 1,
        "num_candidates": 4,
        "chunk_length": None,
    }
    whole = run(spec_with(search, *folders), registry)
    long_chunk = dict(search, chunk_length=50)
    one_chunk = run(spec_with(long_chunk, *folders), registry)

    assert [r.token_ids for r in whole] == [r.token_ids for r in best_of_n]
    assert [r.token_ids for r in one_chunk] == [r.token_ids for r in best_of_n]


def test_best_of_n_picks_max_of_samples(folders, registry):
    spec = spec_with({"kind": "best_of_n", "n": 4}, *folders)
    generator = GuidedGenerator(spec, registry)
    results = generator.generate(PROMPTS)

    # The same rows decoded without search: the best one by score must win.
    decoder = Decoder(generator, PROMPTS, seeds=_seeds(generator, 3))
    decoder.decode(None)
    totals = decoder.score().reshape(len(PROMPTS), 4)
    for prompt, result in enumerate(results):
        best_row = prompt * 4 + int(totals[prompt].argmax())
        ids = decoder.tokens[best_row, : decoder.lengths[best_row]].tolist()
        assert result.token_ids == ids
        assert result.score == pytest.approx(float(totals[prompt].max()))
        assert len(set(totals[prompt].tolist())) > 1, "samples were identical"


def test_cbs_keeps_finished_hypothesis_once(
    gpt2_base, gpt2_tuned, gpt2_untuned, registry
):
    """After a beam ends, its K copies must not fill several beams."""
    spec = spec_with(
        {"kind": "chunk_beam_search", "beam_width": 2, "num_candidates": 3},
        gpt2_base,
        gpt2_tuned,
        gpt2_untuned,
        max_new_tokens=12,
    )
    spec["sampling"]["stop_strings"] = ["e"]
    generator = GuidedGenerator(spec, registry)
    decoder = Decoder(generator, PROMPTS, seeds=[0, 1, 2])
    strategy = RecordingSearch(2, 3, 2)

    strategy.run(decoder)

    assert any((~eligible).any() for _, eligible, _ in strategy.steps)
    for _, eligible, index in strategy.steps:
        for prompt in range(len(PROMPTS)):
            chosen = index[prompt * 6 : prompt * 6 + 6 : 3]
            assert eligible[chosen].all()
            assert chosen[0] != chosen[1]


def _seeds(generator: GuidedGenerator, count: int) -> list[int]:
    from ivg_core.sampling import derive_seed

    return [derive_seed(generator.spec.sampling.seed, i) for i in range(count)]
