"""The HTTP server on tiny real models: OpenAI client round trips, micro-batching, limits, auth, the page."""

import asyncio
import base64
import contextlib
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
import uvicorn
from conftest import CORPUS, SENTENCES, corpus
from openai import OpenAI

from dec2vec import Encoder
from dec2vec.answering import Answerer
from dec2vec.search import Document, Index
from dec2vec.serving import SHUTDOWN_GRACE_S, ServerSettings, create_app
from dec2vec.serving.batching import MicroBatcher

# Headless and quiet: without the networking flags Chromium keeps calling out from an offline machine.
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def chromium():
    """Headless Chromium from Debian's packages, driven by Selenium; closed on leaving the block."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path="/usr/bin/chromedriver")
    return contextlib.closing(webdriver.Chrome(options=options, service=service))


@contextlib.contextmanager
def running(app):
    """Serve ``app`` with uvicorn on a free loopback port in a thread, as ``dec2vec serve`` does (same
    shutdown grace); yields the base URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", timeout_graceful_shutdown=SHUTDOWN_GRACE_S
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=SHUTDOWN_GRACE_S + 10)
        assert not thread.is_alive(), "the server did not shut down"


@pytest.fixture(scope="module")
def encoder(make_tiny_checkpoint):
    return Encoder.load(make_tiny_checkpoint("llama"), attention="bidirectional")


@pytest.fixture(scope="module")
def db(encoder, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("served") / "index.db")
    with Index(path, encoder) as index:
        index.add(corpus(200), show_progress=False)
    return path


@pytest.fixture(scope="module")
def url(encoder, db):
    settings = ServerSettings(model_name="tiny", max_inputs=8, max_input_tokens=256, max_body_bytes=20_000,
                              max_wait_ms=30, max_prompt_tokens=100, max_documents=5)  # fmt: skip
    with running(create_app(encoder, db, settings)) as base:
        yield base


def test_openai_client_round_trip_embeddings(encoder, url):
    client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    texts = ["a cat in the park", "the dog is at the house"]
    response = client.embeddings.create(model="tiny", input=texts)  # the client asks for base64 itself
    vectors = np.array([d.embedding for d in response.data])
    assert np.allclose(vectors, encoder.encode(texts), atol=1e-5)
    assert response.usage.prompt_tokens == sum(encoder.count_tokens(texts))
    short = client.embeddings.create(model="tiny", input=texts[0], dimensions=8, encoding_format="float")
    cut = encoder.encode(texts[:1])[0, :8]
    assert np.allclose(short.data[0].embedding, cut / np.linalg.norm(cut), atol=1e-5)
    raw = httpx.post(f"{url}/v1/embeddings", json={"input": texts, "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][1]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, vectors[1], atol=1e-6)


def test_openai_client_round_trip_generation_whole_and_streamed(encoder, url):
    client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    messages = [{"role": "user", "content": "the cat sat on"}]
    expected = encoder.generate(messages, max_new_tokens=6)
    chat = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6)
    assert chat.choices[0].message.content == expected and chat.usage.completion_tokens > 0
    stream = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == expected
    text = client.completions.create(model="tiny", prompt="the cat sat on", max_tokens=6)
    assert text.choices[0].text == encoder.generate("the cat sat on", max_new_tokens=6)
    streamed = client.completions.create(model="tiny", prompt="the cat sat on", max_tokens=6, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == text.choices[0].text


def test_concurrent_requests_are_batched_and_each_gets_its_own_vectors(encoder, url):
    requests = [[SENTENCES[i], SENTENCES[i + 1]] for i in range(0, 48, 2)]

    async def fire() -> list[dict]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            replies = await asyncio.gather(
                *(client.post("/v1/embeddings", json={"input": r}) for r in requests)
            )
        return [r.json() for r in replies]

    before = _metric(url, "dec2vec_batch_size_count")
    replies = asyncio.run(fire())
    for texts, reply in zip(requests, replies, strict=True):
        assert np.allclose([d["embedding"] for d in reply["data"]], encoder.encode(texts), atol=1e-5)
    passes = _metric(url, "dec2vec_batch_size_count") - before
    assert passes < len(requests)  # fewer forward passes than requests: they were batched


def test_batches_wait_for_the_last_batch_size_so_a_lone_client_never_waits(encoder):
    """A returning group of callers shares one pass; after that, single callers are served without waiting."""
    sizes: list[int] = []

    async def scenario() -> list[float]:
        batcher = MicroBatcher(
            lambda texts, prompt: encoder.encode(texts), ThreadPoolExecutor(1), max_wait_ms=1000,
            on_batch=sizes.append,
        )  # fmt: skip
        batcher.start()
        for _ in range(2):  # the same four callers, twice
            vectors = await asyncio.gather(*(batcher.embed([t]) for t in SENTENCES[:4]))
            assert np.allclose(np.concatenate(vectors), encoder.encode(SENTENCES[:4]), atol=1e-5)
        waits = []
        for text in SENTENCES[:3]:  # one caller at a time
            start = time.perf_counter()
            await batcher.embed([text])
            waits.append(time.perf_counter() - start)
        await batcher.stop()
        return waits

    waits = asyncio.run(scenario())
    assert sizes == [4, 4, 1, 1, 1]
    # The first lone caller waits out the window (the last pass had four); the next ones do not wait at all.
    assert waits[0] >= 1.0 and max(waits[1:]) < 0.5


def _metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_bad_requests_get_4xx_json_and_the_server_keeps_serving(url):
    post = lambda body, **kw: httpx.post(f"{url}/v1/embeddings", **({"json": body} | kw))  # noqa: E731
    checks = [
        (post(None, content=b"{not json", headers={"content-type": "application/json"}), 400, "invalid"),
        (post({"input": 5}), 400, "input"),
        (post({"input": []}), 400, "input is empty"),
        (post({"input": [""]}), 400, "input[0] is empty"),
        (post({"input": ["x"] * 9}), 400, "at most 8"),
        (post({"input": "x", "dimensions": 10_000}), 400, "dimensions"),
        (post({"input": "word " * 30_000}), 413, "request body over 20000 bytes"),
        (
            httpx.post(f"{url}/v1/search", json={"query": "x", "filters": ["lang"]}),
            400,
            "expected FIELD=VALUE",
        ),
    ]
    json_bytes = {"content-type": "application/json"}
    raw = lambda path, content: httpx.post(f"{url}{path}", content=content, headers=json_bytes)  # noqa: E731
    search = lambda body: httpx.post(f"{url}/v1/search", json=body)  # noqa: E731
    checks += [
        (post({"input": [10**9]}), 400, "token id 1000000000 is not in"),
        (post({"input": [[5, -1]]}), 400, "token id -1 is not in"),
        (raw("/v1/embeddings", b'{"input": "a\\ud800b"}'), 400, "body.input: invalid text (a lone surrogate"),
        (raw("/v1/completions", b'{"prompt": "a\\udc00"}'), 400, "body.prompt: invalid text"),
        (raw("/v1/documents", b'{"documents": [{"id": "x\\ud800", "text": "t"}]}'), 400, "documents[0].id"),
        (raw("/v1/documents", b'{"documents": [{"id": "x", "text": "t", "metadata": {"k": ["\\ud800"]}}]}'),
         400, "invalid text"),
        (raw("/v1/embeddings", b'{"input": "a\xff\xfe"}'), 400, "error parsing the body"),
        (raw("/v1/search", b'{"query": "x", "weights": {"dense": NaN}}'), 400, "finite number"),
        (raw("/v1/search", b'{"query": "x", "filters": {"year": {">": 1e999}}}'), 400, "finite number"),
        (search({"query": "x", "rrf_k": 10**30}), 400, "rrf_k"),
        (search({"query": "x", "filters": {"l": {"a": {"b": 1}}}}), 400, "operator"),
        (httpx.get(f"{url}/nope"), 404, "Not Found"),
        (httpx.get(f"{url}/v1/embeddings"), 405, "Method Not Allowed"),
        (post(None, content=(b"x" * 1000 for _ in range(30)), headers=json_bytes), 413, "over 20000 bytes"),
    ]  # fmt: skip
    for response, status, message in checks:
        assert response.status_code == status, response.text
        assert message in response.json()["error"]["message"]
    assert post({"input": "ok now"}).status_code == 200
    long = post({"input": "word " * 1000}).json()  # truncated to 256 tokens, not refused
    assert long["usage"]["prompt_tokens"] == 256


def test_generation_refuses_empty_and_oversize_prompts_and_keeps_serving(url):
    chat, text = f"{url}/v1/chat/completions", f"{url}/v1/completions"
    checks = [
        (text, {"prompt": ""}, 400, "the prompt is empty"),
        (text, {"prompt": "  ", "stream": True}, 400, "the prompt is empty"),
        (chat, {"messages": [{"role": "user", "content": ""}]}, 400, "the prompt is empty"),
        (text, {"prompt": "w" * 150}, 413, "at most 100"),
        (text, {"prompt": "the cat", "max_tokens": 10_000}, 400, "max_tokens asks 10000"),
    ]
    for _ in range(3):  # more than once: refused requests must not use up generation threads
        for endpoint, body, status, message in checks:
            response = httpx.post(endpoint, json=body, timeout=30)  # an empty prompt used to hang here
            assert response.status_code == status, response.text
            assert message in response.json()["error"]["message"]
    answer = httpx.post(text, json={"prompt": "the cat", "max_tokens": 3}, timeout=30).json()
    assert answer["choices"][0]["text"]


def test_a_failure_inside_generation_ends_the_response_and_frees_its_thread(encoder, url, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")  # as a real model can fail mid-request

    monkeypatch.setattr(encoder.model, "generate", broken)
    for _ in range(10):  # more than the generation threads: each failure must free its own
        whole = httpx.post(f"{url}/v1/completions", json={"prompt": "the cat"}, timeout=30)
        assert whole.status_code == 500 and whole.json()["error"]["type"] == "server_error"
        body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
        streamed = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30).text
        assert "generation failed" in streamed and streamed.endswith("data: [DONE]\n\n")
    monkeypatch.undo()
    answer = httpx.post(f"{url}/v1/completions", json={"prompt": "the cat", "max_tokens": 3}, timeout=30)
    assert answer.status_code == 200


class EndlessGeneration:
    """Stands in for ``model.generate``: a token every 10 ms until its stopping criteria say stop, far
    longer than any test waits; ``stopped`` is set when it returns (so its thread is free again)."""

    def __init__(self) -> None:
        self.stopped = threading.Event()

    def __call__(self, *, input_ids, streamer, stopping_criteria, **kwargs):
        streamer.put(input_ids.cpu())  # the prompt, which the streamer skips
        while not bool(torch.as_tensor(stopping_criteria(input_ids, None)).all()):
            time.sleep(0.01)
            streamer.put(torch.tensor([5]))
        streamer.end()
        self.stopped.set()


def test_work_stops_when_the_client_leaves(encoder, url, monkeypatch):
    endless = EndlessGeneration()
    monkeypatch.setattr(encoder.model, "generate", endless)
    with pytest.raises(httpx.ReadTimeout):  # a non-streamed request whose client gives up after 1 s
        httpx.post(f"{url}/v1/completions", json={"prompt": "the cat"}, timeout=1)
    assert endless.stopped.wait(10)  # the server noticed and stopped generating


def test_shutdown_does_not_wait_for_open_streams(encoder, monkeypatch):
    endless = EndlessGeneration()
    monkeypatch.setattr(encoder.model, "generate", endless)
    first_chunk = threading.Event()

    def listen(base: str) -> None:
        body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
        with (
            contextlib.suppress(httpx.HTTPError),
            httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=60) as response,
        ):
            for _ in response.iter_lines():
                first_chunk.set()

    with running(create_app(encoder, None, ServerSettings())) as base:
        listener = threading.Thread(target=listen, args=(base,), daemon=True)
        listener.start()
        assert first_chunk.wait(30)
        start = time.perf_counter()
    assert time.perf_counter() - start < SHUTDOWN_GRACE_S + 5  # the server's thread ended
    assert endless.stopped.wait(5)  # and the generation with it


def test_searches_run_between_the_pieces_of_a_long_document_write(encoder, db, monkeypatch):
    slow = encoder.encode_documents

    def slow_pieces(texts, **kwargs):  # a second per 32 documents, as on a slow machine
        time.sleep(len(texts) / 32)
        return slow(texts, **kwargs)

    monkeypatch.setattr(encoder, "encode_documents", slow_pieces)
    docs = [{"id": f"long-{i}", "text": f"document number {i} about rivers"} for i in range(96)]  # 3 pieces
    done: dict[str, float] = {}
    with running(create_app(encoder, db, ServerSettings(max_documents=100))) as base:
        start = time.perf_counter()

        def write() -> None:
            assert httpx.post(f"{base}/v1/documents", json={"documents": docs}, timeout=60).status_code == 200
            done["write"] = time.perf_counter() - start

        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(0.3)
        hits = httpx.post(f"{base}/v1/search", json={"query": "rivers", "mode": "dense"}, timeout=60)
        done["search"] = time.perf_counter() - start
        writer.join()
        httpx.post(f"{base}/v1/documents", json={"delete": [d["id"] for d in docs]}, timeout=60)
    assert hits.status_code == 200 and done["write"] >= 3.0
    assert done["search"] < done["write"] - 0.5  # it waited for one piece at most, not the whole write


def test_a_stalled_client_does_not_hold_up_others(url):
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as stalled:  # promises a body it never finishes
        stalled.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 1000\r\n\r\n{\"input\": ")  # fmt: skip
        start = time.perf_counter()
        assert httpx.post(f"{url}/v1/embeddings", json={"input": "hello"}).status_code == 200
        assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
        assert time.perf_counter() - start < 5


def test_search_and_document_endpoints(url):
    hits = httpx.post(
        f"{url}/v1/search", json={"query": SENTENCES[7], "k": 3, "filters": {"lang": "en"}}
    ).json()
    assert hits["data"][0]["id"] == "d7" and set(hits["data"][0]["ranks"]) == {"dense", "lexical"}
    new = {"id": "new-1", "text": "Zanzibar archipelago cloves harvest", "metadata": {"lang": "sw"}}
    written = httpx.post(f"{url}/v1/documents", json={"documents": [new]}).json()
    assert written == {"added": 1, "updated": 0, "unchanged": 0, "deleted": 0}
    found = httpx.post(f"{url}/v1/search", json={"query": "zanzibar cloves", "mode": "lexical"}).json()
    assert [h["id"] for h in found["data"]] == ["new-1"]
    assert httpx.post(f"{url}/v1/documents", json={"delete": ["new-1"]}).json()["deleted"] == 1
    many = [{"id": f"m{i}", "text": "x"} for i in range(6)]
    refused = httpx.post(f"{url}/v1/documents", json={"documents": many})
    assert refused.status_code == 413 and "at most 5 per request" in refused.json()["error"]["message"]
    boolean = httpx.post(f"{url}/v1/documents", json={"documents": [{"id": True, "text": "overwrite d1?"}]})
    assert boolean.status_code == 400 and "documents.0.id" in boolean.json()["error"]["message"]
    again = httpx.post(f"{url}/v1/documents", json={"documents": [new, new]}).json()
    assert again == {"added": 1, "updated": 0, "unchanged": 0, "deleted": 0}
    assert httpx.post(f"{url}/v1/documents", json={"documents": [new]}).json()["unchanged"] == 1
    assert httpx.post(f"{url}/v1/documents", json={"delete": ["new-1"]}).json()["deleted"] == 1
    metrics = httpx.get(f"{url}/metrics").text
    assert 'dec2vec_requests_total{path="/v1/search",status="200"}' in metrics
    assert "dec2vec_request_seconds_bucket" in metrics and "dec2vec_tokens_total" in metrics


def test_api_keys_guard_every_endpoint_but_health(encoder, db):
    settings = ServerSettings(api_key="user-key", admin_key="admin-key")
    with running(create_app(encoder, db, settings)) as base:
        body = {"input": "hello"}
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.post(f"{base}/v1/embeddings", json=body).status_code == 401
        wrong = httpx.post(f"{base}/v1/embeddings", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
        user = {"Authorization": "Bearer user-key"}
        assert httpx.post(f"{base}/v1/embeddings", json=body, headers=user).status_code == 200
        assert httpx.get(f"{base}/metrics").status_code == 401
        write = {"delete": ["d1"]}
        assert httpx.post(f"{base}/v1/documents", json=write, headers=user).status_code == 403
        admin = {"Authorization": "Bearer admin-key"}
        assert httpx.post(f"{base}/v1/documents", json=write, headers=admin).status_code == 200
        client = OpenAI(base_url=f"{base}/v1", api_key="user-key")
        assert len(client.embeddings.create(model="tiny", input="x").data[0].embedding) == encoder.dim
        lower = {"Authorization": "bearer user-key"}  # RFC 7235: the scheme is case-insensitive
        assert httpx.post(f"{base}/v1/embeddings", json=body, headers=lower).status_code == 200
        assert httpx.get(f"{base}/openapi.json").status_code == 401  # the API's description is behind the key
        assert "/v1/search" in httpx.get(f"{base}/openapi.json", headers=user).json()["paths"]
        assert httpx.get(f"{base}/docs").status_code == 404 and httpx.get(f"{base}/redoc").status_code == 404


def test_host_header_check_and_cors_are_explicit(encoder):
    settings = ServerSettings(allowed_hosts=["localhost", "127.0.0.1"], cors_origins=["https://app.example"])
    with running(create_app(encoder, None, settings)) as base:
        assert httpx.get(f"{base}/healthz").status_code == 200
        rebound = httpx.get(f"{base}/healthz", headers={"Host": "attacker.example"})  # DNS rebinding
        assert rebound.status_code == 400
        preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
        allowed = httpx.options(f"{base}/v1/embeddings", headers=preflight)
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        other = httpx.post(
            f"{base}/v1/embeddings", json={"input": "x"}, headers={"Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in other.headers
    with running(create_app(encoder, None, ServerSettings())) as base:  # default: no CORS at all
        plain = httpx.post(
            f"{base}/v1/embeddings", json={"input": "x"}, headers={"Origin": "https://app.example"}
        )
        assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers


def test_web_page_searches_and_compares_in_headless_chromium(url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as until
    from selenium.webdriver.support.ui import WebDriverWait

    with chromium() as browser:
        browser.get(url)
        wait = WebDriverWait(browser, 30)
        browser.find_element(By.ID, "query").send_keys(SENTENCES[12])
        browser.find_element(By.ID, "filters").send_keys("lang=en")
        browser.find_element(By.ID, "search-button").click()
        first = wait.until(until.presence_of_element_located((By.CSS_SELECTOR, "#results .hit")))
        assert first.get_attribute("data-id") == "d12"
        assert "lexical #1" in first.text and "score" in first.text and "sentence 12" in first.text
        browser.find_element(By.ID, "tab-similarity").click()
        browser.find_element(By.ID, "text-a").send_keys("a cat in the park")
        browser.find_element(By.ID, "text-b").send_keys("a cat in the park")
        browser.find_element(By.ID, "compare-button").click()
        wait.until(until.text_to_be_present_in_element((By.ID, "similarity-result"), "cosine similarity"))
        assert browser.find_element(By.ID, "similarity-result").text == "cosine similarity: 1.0000"


# ---- grounded chat: the dec2vec.search block -----------------------------------------------------------


@pytest.fixture(scope="module")
def grounded_url(encoder, tmp_path_factory):
    """A server over short documents: the tiny model's context is 256 tokens."""
    path = str(tmp_path_factory.mktemp("grounded") / "index.db")
    documents = [Document(f"c{i}", text, f"t{i}", {"n": i}) for i, text in enumerate(CORPUS)]
    with Index(path, encoder) as index:
        index.add(documents, show_progress=False)
    with running(create_app(encoder, path, ServerSettings(model_name="tiny"))) as base:
        yield base, path


def test_openai_client_gets_a_grounded_answer_with_its_sources(encoder, grounded_url):
    url, path = grounded_url
    client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    question = "Which city is the capital of France?"
    messages = [{"role": "user", "content": question}]
    grounding = {"dec2vec": {"search": {"k": 2, "mode": "hybrid"}}}
    with Index(path, encoder) as index:
        expected = Answerer(index).ask(question, k=2, max_new_tokens=6, cache="off")
    chat = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6, extra_body=grounding)
    assert chat.choices[0].message.content == expected.text
    assert chat.usage.prompt_tokens == expected.timings["prompt_tokens"]  # the grounded prompt
    sources = chat.model_extra["dec2vec"]["sources"]
    assert [s["id"] for s in sources] == [s.id for s in expected.sources] and len(sources) == 2
    assert [s["number"] for s in sources] == [1, 2] and all(s["text"] for s in sources)
    stream = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=6, stream=True, extra_body=grounding
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected.text
    assert [s["id"] for s in chunks[-1].model_extra["dec2vec"]["sources"]] == [s.id for s in expected.sources]
    assert _metric(url, "dec2vec_kv_cache_hits") >= 1  # the second request reused the first one's states
    assert _metric(url, "dec2vec_kv_cache_reused_tokens") > 0


def test_a_bad_grounding_block_is_a_400_and_the_server_keeps_answering(grounded_url, url):
    base, _ = grounded_url
    messages = [{"role": "user", "content": "capital of France"}]
    for block, problem in [
        ({"search": {"k": 0}}, "k"),
        ({"search": {"k": 2, "top": 3}}, "top"),  # a misspelt option is refused, not ignored
        ({"search": {"mode": "fuzzy"}}, "mode"),
        ({"search": {"filters": {"n": {"$regex": "x"}}}}, "filter"),
        ({}, "search"),
    ]:
        reply = httpx.post(f"{base}/v1/chat/completions", json={"messages": messages, "dec2vec": block})
        assert reply.status_code == 400, (block, reply.text)
        assert problem in reply.text
    last = [{"role": "assistant", "content": "hello"}]
    reply = httpx.post(f"{base}/v1/chat/completions", json={"messages": last, "dec2vec": {"search": {}}})
    assert reply.status_code == 400 and "user" in reply.json()["error"]["message"]
    ok = httpx.post(f"{base}/v1/chat/completions", json={"messages": messages, "max_tokens": 2})
    assert ok.status_code == 200


def test_grounding_needs_an_index(encoder):
    with running(create_app(encoder, None, ServerSettings())) as base:
        reply = httpx.post(
            f"{base}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "dec2vec": {"search": {"k": 1}}},
        )
    assert reply.status_code == 404 and "--db" in reply.json()["error"]["message"]


def test_web_page_ask_tab_streams_a_grounded_answer_and_links_citations(encoder, grounded_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as until
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, path = grounded_url
    question = "Which city is the capital of France?"
    with Index(path, encoder) as index:
        answerer = Answerer(index)
        prompt = sum(len(s) for s in answerer.segments(question, answerer.retrieve(question, k=2)))
        left = encoder.context_length - prompt  # the server's budget when the request sets no max_tokens
        expected = answerer.ask(question, k=2, max_new_tokens=left, cache="off")
    with chromium() as browser:
        browser.get(url)
        wait = WebDriverWait(browser, 60)
        browser.find_element(By.ID, "tab-ask").click()
        browser.find_element(By.ID, "question").send_keys(question)
        Select(browser.find_element(By.ID, "ask-k")).select_by_visible_text("2")
        browser.find_element(By.ID, "ask-button").click()
        wait.until(until.text_to_be_present_in_element((By.ID, "ask-status"), "answered"))
        items = browser.find_elements(By.CSS_SELECTOR, "#sources li")
        assert [i.get_attribute("data-id") for i in items] == [s.id for s in expected.sources]
        assert [i.get_attribute("id") for i in items] == ["source-1", "source-2"]
        shown = browser.execute_script("return document.getElementById('answer').textContent")
        assert shown == expected.text
        nodes = browser.execute_script(
            "return withCitations('Paris [1], not [7]; see [2].', 2)"
            ".map(n => n.nodeName === 'A' ? n.getAttribute('href') : n.textContent)"
        )
        assert nodes == ["Paris ", "#source-1", ", not [7]; see ", "#source-2", "."]
