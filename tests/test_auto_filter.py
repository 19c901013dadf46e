"""Auto-filter: hard filters read out of a query by the decoder, scored over the index's own metadata values
(how much naming each value raises the query's log-probability)."""

from __future__ import annotations

import json
import math

import httpx
import pytest
import torch
from conftest import corpus
from test_serving import running
from typer.testing import CliRunner

from dec2vec import Encoder
from dec2vec.attention import lm_logits
from dec2vec.cli import app
from dec2vec.search import Index
from dec2vec.search.auto_filter import NO_FILTER, PROMPT, PROMPT_NO_VALUE, offered, read_filters
from dec2vec.serving import create_app


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def encoder(request, make_tiny_checkpoint):
    return Encoder.load(make_tiny_checkpoint(request.param), attention="bidirectional")


@pytest.fixture
def db(encoder, tmp_path):
    path = str(tmp_path / "auto.db")
    with Index(path, encoder) as index:
        index.add(corpus(60), show_progress=False)  # lang en/fr, year numbers, group numbers
    return path


def test_continuation_logprobs_are_the_sum_of_each_tokens_log_probability(encoder):
    chat = [{"role": "user", "content": "where is it?"}]
    prompts = ["the cat sat on", chat, "a much longer prompt than the rest"]
    text = " the mat today"
    scores = encoder.continuation_logprobs(prompts, text, batch_size=2)  # two batches, padded rows
    tail = encoder.tokenizer(text, add_special_tokens=False)["input_ids"]
    for prompt, score in zip(prompts, scores, strict=True):  # one unpadded causal pass per prompt
        head = encoder._prompt_ids(prompt, False)
        ids = torch.tensor([head + tail])
        with torch.inference_mode():
            logits = lm_logits(encoder.model, ids, torch.ones_like(ids), causal=True)[0].float()
        expected = sum(
            math.log(torch.softmax(logits[len(head) - 1 + i], -1)[token]) for i, token in enumerate(tail)
        )
        assert score == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ValueError, match="non-empty text"):
        encoder.continuation_logprobs(prompts, "")


def test_only_fields_with_a_few_text_values_are_offered():
    facets = {
        "lang": {"en": 50, "fr": 3, "de": 9},
        "single": {"x": 10},
        "open": {True: 3, False: 2},
        "many": {f"v{i}": 1 for i in range(40)},
    }
    assert offered(facets) == {"lang": ["en", "de", "fr"]}  # most frequent first
    assert offered(facets, max_values=40) == {
        "lang": ["en", "de", "fr"],
        "many": [f"v{i}" for i in range(40)],
    }


def test_a_filter_is_one_of_the_values_and_only_when_it_beats_no_filter(encoder):
    facets = {"lang": {"en": 5, "fr": 2}, "year": {"1999": 1}}
    always = read_filters(encoder, "a cat in Paris", facets, margin=-1e9)  # any value beats "any"
    assert set(always.scores) == {"lang"} and set(always.scores["lang"]) == {NO_FILTER, "en", "fr"}
    best = max(("en", "fr"), key=always.scores["lang"].__getitem__)
    assert always.filters == {"lang": best} and always.scores["lang"][NO_FILTER] == 0.0
    gains = encoder.continuation_logprobs(
        [PROMPT_NO_VALUE, PROMPT.format(field="lang", value="en")], " a cat in Paris"
    )  # a value's score: what naming it adds to the query's log-probability
    assert always.scores["lang"]["en"] == pytest.approx(gains[1] - gains[0], abs=1e-4)
    never = read_filters(encoder, "a cat in Paris", facets, margin=1e9)
    assert never.filters == {} and never.scores == always.scores
    assert "lang: no filter" in never.explain()[0] and f"lang={best}" in always.explain()[0]
    with pytest.raises(ValueError, match="query is empty"):
        read_filters(encoder, "  ", facets)


def test_search_applies_what_it_read_and_leaves_the_callers_fields_alone(encoder, db):
    with Index(db) as index:
        reading, hits = index.search_auto("a sentence", k=5, margin=-1e9)
        assert set(reading.filters) == {"lang"} and hits
        assert all(h.metadata["lang"] == reading.filters["lang"] for h in hits)
        reading, hits = index.search_auto("a sentence", k=5, margin=-1e9, filters={"lang": "fr"})
        assert reading.filters == {} and reading.scores == {}  # lang is the caller's: not asked
        assert all(h.metadata["lang"] == "fr" for h in hits)


def test_cli_and_server_report_the_filters_they_applied(encoder, db):
    runner = CliRunner(env={"COLUMNS": "300"})
    result = runner.invoke(app, ["search", db, "a sentence", "--auto-filter", "--json", "--explain"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload) == {"filters", "scores", "results"} and set(payload["scores"]) == {"lang"}
    shown = runner.invoke(app, ["search", db, "a sentence", "--auto-filter", "--explain"])
    assert shown.exit_code == 0 and "auto-filter:" in shown.output and "nats over" in shown.output
    refused = runner.invoke(app, ["search", db, "a sentence", "--explain"])
    assert refused.exit_code == 2 and "--explain applies with --auto-filter only" in refused.output
    for margin, read in (("-1e9", True), ("1e9", False)):  # any value wins / none can
        args = ["search", db, "a sentence", "--auto-filter", "--json", "--margin", margin]
        given = runner.invoke(app, args)
        assert given.exit_code == 0 and bool(json.loads(given.stdout)["filters"]) is read
    refused = runner.invoke(app, ["search", db, "a sentence", "--margin", "1"])
    assert refused.exit_code == 2 and "--margin applies with --auto-filter only" in refused.output
    with running(create_app(encoder, db)) as base:
        body = {"query": "a sentence", "k": 3, "auto_filter": True}
        served = httpx.post(f"{base}/v1/search", json=body).json()
        assert served["auto_filter"]["filters"] == payload["filters"]
        assert set(served["auto_filter"]["scores"]["lang"]) == {NO_FILTER, "en", "fr"}
        assert "auto_filter" not in httpx.post(f"{base}/v1/search", json={"query": "a sentence"}).json()
        none = httpx.post(f"{base}/v1/search", json=body | {"auto_filter_margin": 1e9}).json()
        assert none["auto_filter"]["filters"] == {} and none["auto_filter"]["margin"] == 1e9
        lone = httpx.post(f"{base}/v1/search", json={"query": "a sentence", "auto_filter_margin": 1})
        assert lone.status_code == 400 and "applies with auto_filter only" in lone.text


def test_an_encoder_that_cannot_generate_is_refused(tmp_path):
    from dec2vec.models import load_model

    with Index(str(tmp_path / "m.db"), load_model("minilm")) as index:
        index.add(corpus(5), show_progress=False)
        with pytest.raises(ValueError, match="cannot read queries"):
            index.search_auto("a sentence")
