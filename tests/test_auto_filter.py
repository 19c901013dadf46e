"""Auto-filter: hard filters read out of a query by the decoder, as a constrained choice among the index's
own metadata values."""

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
from dec2vec.search.auto_filter import NO_FILTER, offered, read_filters
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


def test_choice_logprobs_are_the_sum_of_each_tokens_log_probability(encoder):
    prompt = [{"role": "user", "content": "the cat sat on"}]
    options = ["the mat", "a", "stock market prices"]
    scores = encoder.choice_logprobs(prompt, options, batch_size=2)  # two batches, padded rows
    head = encoder._prompt_ids(prompt, False)
    for option, score in zip(options, scores, strict=True):  # one unpadded causal pass per option
        tail = encoder.tokenizer(option, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([head + tail])
        with torch.inference_mode():
            logits = lm_logits(encoder.model, ids, torch.ones_like(ids), causal=True)[0].float()
        expected = sum(
            math.log(torch.softmax(logits[len(head) - 1 + i], -1)[token]) for i, token in enumerate(tail)
        )
        assert score == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ValueError, match="no empty one"):
        encoder.choice_logprobs(prompt, ["x", ""])


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
    assert always.filters == {"lang": best}
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
    assert shown.exit_code == 0 and "auto-filter:" in shown.output and "log-probs" in shown.output
    refused = runner.invoke(app, ["search", db, "a sentence", "--explain"])
    assert refused.exit_code == 2 and "--explain applies with --auto-filter only" in refused.output
    with running(create_app(encoder, db)) as base:
        body = {"query": "a sentence", "k": 3, "auto_filter": True}
        served = httpx.post(f"{base}/v1/search", json=body).json()
        assert served["auto_filter"]["filters"] == payload["filters"]
        assert set(served["auto_filter"]["scores"]["lang"]) == {NO_FILTER, "en", "fr"}
        assert "auto_filter" not in httpx.post(f"{base}/v1/search", json={"query": "a sentence"}).json()


def test_an_encoder_that_cannot_generate_is_refused(tmp_path):
    from dec2vec.models import load_model

    with Index(str(tmp_path / "m.db"), load_model("minilm")) as index:
        index.add(corpus(5), show_progress=False)
        with pytest.raises(ValueError, match="cannot read queries"):
            index.search_auto("a sentence")
