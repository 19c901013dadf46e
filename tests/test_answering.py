"""Grounded answers: retrieval into a segmented prompt, exact key-value reuse, citations, bad input."""

from __future__ import annotations

import pytest
from conftest import CORPUS

from dec2vec import Encoder
from dec2vec.answering import Answerer, cited_numbers
from dec2vec.kv_cache import PrefixCache
from dec2vec.models import load_model
from dec2vec.search import Document, Index

# The tiny models' context is 256 tokens: short documents (the tiny tokenizer was trained on them).
DOCUMENTS = [
    Document(f"c{i}", text, f"t{i}", {"lang": "fr" if i == 6 else "en"}) for i, text in enumerate(CORPUS)
]


@pytest.fixture(params=["llama", "gemma3_text", "gpt2"])
def answerer(request, make_tiny_checkpoint, tmp_path):
    """Rotary positions (llama), sliding-window layers (gemma3) and learned absolute positions (gpt2)."""
    encoder = Encoder.load(make_tiny_checkpoint(request.param), attention="bidirectional")
    with Index(str(tmp_path / "index.db"), encoder) as index:
        index.add(DOCUMENTS)
        yield Answerer(index, cache=PrefixCache(max_mib=64), instruction="Answer from the passages.")


def test_cached_prefixes_give_exactly_the_uncached_greedy_answer(answerer):
    question = "Which city is the capital of France?"
    uncached = answerer.ask(question, k=3, max_new_tokens=12, cache="off")
    first = answerer.ask(question, k=3, max_new_tokens=12)  # fills the cache
    again = answerer.ask(question, k=3, max_new_tokens=12)  # the whole context comes from the cache
    assert uncached.timings["new_tokens"] > 0 and uncached.text == first.text == again.text
    assert uncached.timings["reused_tokens"] == first.timings["reused_tokens"] == 0
    segments = answerer.segments(question, answerer.index.search(question, k=3))
    assert again.timings["reused_tokens"] == sum(len(s) for s in segments[:-1])
    assert answerer.cache.stats.hits == 1 and answerer.cache.stats.misses == 1


def test_another_question_reuses_the_instruction_and_the_passages_it_shares(answerer):
    question = "Which city is the capital of France?"
    answerer.ask(question, k=3, max_new_tokens=4)
    hits = answerer.index.search(question, k=3)
    reordered = "capital of France: which city?"  # other words, other order of passages or the same
    other_hits = answerer.index.search(reordered, k=3)
    answer = answerer.ask(reordered, k=3, max_new_tokens=4)
    shared = 0  # passages in the same place after the same passages
    for a, b in zip(hits, other_hits, strict=True):
        if a.id != b.id:
            break
        shared += 1
    segments = answerer.segments(reordered, other_hits)
    assert answer.timings["reused_tokens"] == sum(len(s) for s in segments[: 1 + shared])
    assert answer.text == answerer.ask(reordered, k=3, max_new_tokens=4, cache="off").text


def test_the_cache_stays_within_its_size_by_evicting_the_least_recently_used(answerer):
    answerer.cache = PrefixCache(max_mib=0.05)  # a few prefixes of the tiny model
    for question in ("capital of France", "stock market prices", "a cat in the sun", "guitar on the street"):
        answerer.ask(question, k=3, max_new_tokens=2)
    assert 0 < answerer.cache.bytes <= answerer.cache.max_bytes
    assert answerer.cache.stats.evictions > 0


def test_the_answer_json_lists_the_retrieved_passages_in_prompt_order(answerer):
    answer = answerer.ask("Which city is the capital of France?", k=3, max_new_tokens=6)
    hits = answerer.index.search("Which city is the capital of France?", k=3)
    payload = answer.to_json()
    assert [s["id"] for s in payload["sources"]] == [h.id for h in hits]
    assert [s["number"] for s in payload["sources"]] == [1, 2, 3]
    assert set(payload["timings"]) >= {"retrieve_s", "first_token_s", "prompt_tokens", "new_tokens"}
    context = answerer.context("Which city is the capital of France?", k=3)
    assert all(f"[{n}] {h.title}\n{h.text}" in context for n, h in enumerate(hits, start=1))


def test_filters_reach_retrieval(answerer):
    answer = answerer.ask("capital of France", k=3, max_new_tokens=2, filters={"lang": "fr"})
    assert [s.id for s in answer.sources] == ["c6"]  # the one French-tagged document


def test_citations_are_read_from_the_answer_text():
    assert cited_numbers("Paris [1], as [3] says; not [x] or [ 2]") == {1, 3}


def test_bad_input_is_refused_clearly(answerer, tmp_path):
    with pytest.raises(ValueError, match="question is empty"):
        answerer.ask("   ")
    with pytest.raises(ValueError, match="cache must be one of"):
        answerer.ask("capital", cache="sometimes")
    with pytest.raises(ValueError, match="context is"):
        answerer.ask("capital", k=3, max_new_tokens=10_000)
    with pytest.raises(ValueError, match="positive"):
        PrefixCache(max_mib=0)


def test_a_model_that_cannot_generate_is_refused(tmp_path):
    with Index(str(tmp_path / "m.db"), load_model("minilm")) as index:
        index.add(DOCUMENTS)
        with pytest.raises(ValueError, match="cannot generate"):
            Answerer(index)


def test_generation_continues_from_the_given_states_instead_of_recomputing_them(answerer):
    encoder = answerer.generator
    segments = answerer.segments("capital of France", answerer.index.search("capital of France", k=2))
    states, reused = answerer.cache.prefill(encoder.model, segments)
    prefix = sum(len(s) for s in segments[:-1])
    assert reused == 0 and states.get_seq_length() == prefix
    ids = [t for s in segments for t in s]
    list(encoder.stream_ids(ids, past_key_values=states, max_new_tokens=5))
    assert states.get_seq_length() >= len(ids)  # generate appended to these very states


def test_in_bfloat16_a_cache_hit_answers_as_the_miss_that_filled_it(make_tiny_checkpoint, tmp_path):
    """The same prompt again starts from the states the miss computed and stored; only a prefill split
    differently (no cache, or a partial hit) may round differently in bfloat16."""
    encoder = Encoder.load(make_tiny_checkpoint("llama"), attention="bidirectional", dtype="bfloat16")
    with Index(str(tmp_path / "bf16.db"), encoder) as index:
        index.add(DOCUMENTS)
        answerer = Answerer(index, instruction="Answer from the passages.")
        for question in ("Which city is the capital of France?", "stock prices fell", "a cat sleeps"):
            miss = answerer.ask(question, k=3, max_new_tokens=12)
            hit = answerer.ask(question, k=3, max_new_tokens=12)
            assert hit.timings["reused_tokens"] > miss.timings["reused_tokens"]
            assert hit.text == miss.text and hit.timings["new_tokens"] > 0


def test_a_cached_prefix_too_short_to_pay_for_itself_is_not_used(answerer):
    model = answerer.generator.model
    segments = answerer.segments("capital of France", answerer.index.search("capital of France", k=2))
    prefix = sum(len(s) for s in segments[:-1])
    share = prefix / (prefix + len(segments[-1]))
    for min_reuse, reused in ((0.0, prefix), (share, prefix), (share + 0.01, 0)):
        cache = PrefixCache(min_reuse=min_reuse)
        cache.prefill(model, segments)
        assert cache.prefill(model, segments)[1] == reused
    with pytest.raises(ValueError, match="share of the prompt"):
        PrefixCache(min_reuse=1.5)
