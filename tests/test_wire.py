"""OpenAI's wire format on its own: request checks and response shapes, with a real (tiny) tokenizer."""

import base64

import numpy as np
import pytest
from pydantic import ValidationError

from dec2vec.serving.wire import (
    APIError,
    ChatRequest,
    DocumentsRequest,
    EmbeddingRequest,
    choice,
    embedding_list,
    error_body,
    finish_reason,
    fit,
    texts_of,
    token_budget,
    usage,
)


def test_texts_of_reads_strings_lists_and_token_ids(tiny_tokenizer):
    ids = tiny_tokenizer("a cat sat", add_special_tokens=False)["input_ids"]
    assert texts_of(EmbeddingRequest(input="a cat"), tiny_tokenizer, 8) == ["a cat"]
    assert texts_of(EmbeddingRequest(input=["a", "b"]), tiny_tokenizer, 8) == ["a", "b"]
    assert texts_of(EmbeddingRequest(input=ids), tiny_tokenizer, 8) == ["a cat sat"]
    assert texts_of(EmbeddingRequest(input=[ids, ids]), tiny_tokenizer, 8) == ["a cat sat"] * 2
    for given, message in [
        ([], "input is empty"),
        (["x"] * 9, "9 inputs: at most 8"),
        (["ok", " "], "input[1] is empty"),
        ([len(tiny_tokenizer)], f"token id {len(tiny_tokenizer)} is not in"),
        ([ids, [-3]], "input[1]: token id -3"),
    ]:
        with pytest.raises(APIError) as err:
            texts_of(EmbeddingRequest(input=given), tiny_tokenizer, 8)
        assert err.value.status_code == 400 and message in err.value.detail


def test_fit_cuts_on_a_token_boundary_or_refuses(tiny_tokenizer):
    long = "the quick brown fox jumps over the lazy dog " * 5
    count = len(tiny_tokenizer(long, add_special_tokens=False)["input_ids"])
    (cut,), tokens = fit([long], tiny_tokenizer, 10, "truncate")
    assert tokens == 10 and long.startswith(cut)
    assert len(tiny_tokenizer(cut, add_special_tokens=False)["input_ids"]) == 10
    assert fit(["a cat"], tiny_tokenizer, 10, "error")[0] == ["a cat"]
    with pytest.raises(APIError, match=rf"input\[0\] is {count} tokens: at most 10") as err:
        fit([long], tiny_tokenizer, 10, "error")
    assert err.value.status_code == 413


def test_embedding_list_truncates_renormalises_and_encodes_base64():
    vectors = np.array([[0.6, 0.8, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    whole = embedding_list(vectors, None, "float", "m", 7)
    assert whole["usage"] == {"prompt_tokens": 7, "total_tokens": 7} and whole["model"] == "m"
    assert [d["index"] for d in whole["data"]] == [0, 1]
    assert np.allclose(whole["data"][0]["embedding"], [0.6, 0.8, 0.0])
    cut = embedding_list(vectors, 1, "float", "m", 7)["data"]
    assert np.allclose(cut[0]["embedding"], [1.0]) and np.allclose(cut[1]["embedding"], [0.0])  # no NaN
    packed = embedding_list(vectors, None, "base64", "m", 7)["data"][1]["embedding"]
    assert np.array_equal(np.frombuffer(base64.b64decode(packed), "<f4"), vectors[1])
    with pytest.raises(APIError, match="dimensions must be at most 3"):
        embedding_list(vectors, 4, "float", "m", 7)


def test_generation_shapes_and_budget():
    assert choice(False, "hi", "stop", streamed=False) == {"index": 0, "text": "hi", "finish_reason": "stop"}
    assert choice(True, "hi", None, streamed=True)["delta"] == {"content": "hi"}
    assert choice(True, "", "length", streamed=True)["delta"] == {}
    assert choice(True, "hi", "stop", streamed=False)["message"] == {"role": "assistant", "content": "hi"}
    assert usage(3, 4) == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert token_budget(None, 100, 256, 1024, "prompt") == 156  # what the context leaves
    assert token_budget(None, 10, 256, 64, "prompt") == 64  # the server's cap
    assert token_budget(20, 10, 256, 64, "prompt") == 20
    with pytest.raises(APIError, match="the prompt takes 250, max_tokens asks 10"):
        token_budget(10, 250, 256, 64, "prompt")
    assert finish_reason(20, 20) == "length" and finish_reason(3, 20) == "stop"


def test_errors_and_bodies_follow_openai():
    assert error_body(401, "no")["error"] == {
        "message": "no", "type": "authentication_error", "param": None, "code": 401,
    }  # fmt: skip
    assert error_body(413, "big", "input")["error"]["type"] == "invalid_request_error"
    assert error_body(500, "x")["error"]["type"] == "server_error"
    with pytest.raises(ValidationError, match=r"messages\[0\]\.content: invalid text"):
        ChatRequest.model_validate({"messages": [{"role": "user", "content": "a\ud800"}]})
    with pytest.raises(ValidationError, match="id"):
        DocumentsRequest.model_validate({"documents": [{"id": True, "text": "t"}]})
    assert ChatRequest.model_validate({"messages": [{"role": "user", "content": "hi"}], "seed": 1})
