"""The dec2vec command line, run in-process on a tiny checkpoint."""

import json

import numpy as np
from typer.testing import CliRunner

from dec2vec import Encoder
from dec2vec.cli import app
from dec2vec.encoder import preferred_dtype
from dec2vec.search import Index

runner = CliRunner(env={"COLUMNS": "300"})  # no line wrapping inside rich error boxes


def test_embed_text_lines_to_npy(make_tiny_checkpoint, tmp_path):
    model = str(make_tiny_checkpoint("llama"))
    lines = ["a cat sat on the mat", "", "the stock market fell"]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    result = runner.invoke(
        app, ["embed", "-m", model, "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / "o.npy")]
    )
    assert result.exit_code == 0, result.output
    dtype, reason = preferred_dtype()  # no --dtype: bfloat16 where the hardware has it, said once
    assert f"dtype: {dtype} ({reason}" in result.output
    expected = Encoder.load(model, dtype=dtype).encode(lines)
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), expected, atol=1e-6)
    result = runner.invoke(
        app, ["embed", "-m", model, "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / "o32.npy"),
              "--dtype", "float32"]
    )  # fmt: skip
    assert result.exit_code == 0 and "dtype:" not in result.output
    np.testing.assert_allclose(np.load(tmp_path / "o32.npy"), Encoder.load(model).encode(lines), atol=1e-6)


def test_embed_jsonl_to_jsonl_keeps_ids(make_tiny_checkpoint, tmp_path):
    model = str(make_tiny_checkpoint("qwen3"))
    rows = [{"id": "a", "text": "a cat"}, {"id": "b", "text": "a dog"}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["embed", "-m", model, "--attention", "bidirectional", "-i", str(tmp_path / "in.jsonl"),
            "--dtype", "float32"]  # fmt: skip
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 0, result.output
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in out] == ["a", "b"]
    expected = Encoder.load(model, attention="bidirectional").encode(["a cat", "a dog"])
    np.testing.assert_allclose(np.array([r["embedding"] for r in out]), expected, atol=1e-6)


def test_embed_shards_line_files_and_each_shard_says_which_rows_it_holds(make_tiny_checkpoint, tmp_path):
    model = str(make_tiny_checkpoint("llama"))
    lines = [f"sentence number {i} about a cat" for i in range(7)]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    args = ["embed", "-m", model, "-i", str(tmp_path / "in.txt"), "--dtype", "float32"]
    rows = []
    for i in range(3):  # two machines each given a third used to both embed everything
        result = runner.invoke(app, [*args, "-o", str(tmp_path / f"part{i}.jsonl"), "--shard", f"{i}/3"])
        assert result.exit_code == 0, result.output
        rows += [json.loads(line) for line in (tmp_path / f"part{i}.jsonl").read_text().splitlines()]
    assert [r["row"] for r in rows] == list(range(7)) and [r["id"] for r in rows] == list(range(7))
    expected = Encoder.load(model).encode(lines)
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), expected, atol=1e-5)
    refused = [
        (["-o", str(tmp_path / "o.npy"), "--shard", "1/2"], "could not say which rows"),
        (["-o", str(tmp_path / "o.npy"), "--shard", "2/2"], "expected 0 <= i < N"),
        (["-o", str(tmp_path / "o.npy"), "--chunk-tokens", "64"], "--chunk-tokens does not apply"),
        (["-o", str(tmp_path / "o.npy"), "--ray"], "--ray does not apply"),
        (["-o", str(tmp_path / "shards"), "--prompt-name", "query"], "--prompt-name does not apply"),
        (["-o", str(tmp_path / "o.npy"), "--batch-size", "0"], "--batch-size"),
    ]
    for extra, message in refused:
        result = runner.invoke(app, [*args, *extra])
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "o.npy").exists() and not (tmp_path / "shards").exists()


def test_embed_malformed_jsonl_names_file_and_line(make_tiny_checkpoint, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "oops"}\n')
    result = runner.invoke(
        app,
        ["embed", "-m", str(make_tiny_checkpoint("llama")), "-i", str(bad), "-o", str(tmp_path / "o.npy")],
    )
    assert result.exit_code == 2
    assert "bad.jsonl:2" in result.output and "'text'" in result.output
    assert not (tmp_path / "o.npy").exists()


def test_similarity_and_bad_options(make_tiny_checkpoint):
    model = str(make_tiny_checkpoint("llama"))
    result = runner.invoke(app, ["similarity", "a cat", "a cat", "-m", model])
    assert result.exit_code == 0, result.output
    assert float(result.stdout.strip()) > 0.9999
    result = runner.invoke(app, ["similarity", "a", "b", "-m", model, "--pooling", "max"])
    assert result.exit_code == 2 and "pooling must be one of" in result.output


def test_models_lists_shipped_encoders_and_backbones():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert "smollm2-135m-embed (default)" in result.output
    assert "smollm2-135m" in result.output and "gemma3-270m" in result.output


def test_demo_compares_answers_and_searches(make_tiny_checkpoint, tmp_path):
    """The main job, end to end on a tiny model: raw vs encoder scores, similarities, chat, search."""
    db = tmp_path / "demo.db"
    args = ["demo", "-m", str(make_tiny_checkpoint("llama")), "--db", str(db)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "raw backbone vs dec2vec-converted encoder" in result.stdout
    assert "cosine similarity" in result.stdout and "What is the capital of France?" in result.stdout
    assert result.stdout.count("hybrid search:") == 3 and "3000 added, 0 unchanged" in result.stdout
    # the tiny model's 256-token context cannot hold three passages: said, not a crash
    assert "ask (retrieve, then answer" in result.stdout and "model's context is 256" in result.stdout
    with Index(str(db)) as index:  # the demo's SQLite index holds every bundled sentence
        assert index.stats()["documents"] == 3000
    again = runner.invoke(app, args)  # a rerun finds its index complete: nothing is embedded twice
    assert again.exit_code == 0 and "0 added, 3000 unchanged" in again.stdout
    assert again.stdout.count("hybrid search:") == 3


def test_ask_answers_from_the_index_with_numbered_sources(make_tiny_checkpoint, tmp_path):
    from conftest import CORPUS

    from dec2vec.answering import Answerer

    model = str(make_tiny_checkpoint("llama"))
    db = str(tmp_path / "ask.db")
    rows = [{"id": f"c{i}", "title": f"t{i}", "text": text} for i, text in enumerate(CORPUS)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    added = runner.invoke(app, ["index", "add", db, str(tmp_path / "docs.jsonl"), "-m", model,
                                "--attention", "bidirectional", "--dtype", "float32"])  # fmt: skip
    assert added.exit_code == 0, added.output
    question = "Which city is the capital of France?"
    result = runner.invoke(app, ["ask", db, question, "-k", "2", "--max-new-tokens", "5", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    with Index(db) as index:
        expected = Answerer(index).ask(question, k=2, max_new_tokens=5, cache="off")
    assert payload["answer"] == expected.text and payload["question"] == question
    assert [s["id"] for s in payload["sources"]] == [s.id for s in expected.sources]
    assert payload["timings"]["prompt_tokens"] > 0 and 0 < payload["timings"]["new_tokens"] <= 5
    context = runner.invoke(app, ["ask", db, question, "-k", "2", "--context-only"])
    assert context.exit_code == 0 and "[1] " in context.output and "[2] " in context.output
    assert f"Question: {question}" in context.output
    shown = runner.invoke(app, ["ask", db, question, "-k", "2", "--max-new-tokens", "3"])
    assert shown.exit_code == 0 and "[1]" in shown.output and "sources" in shown.output
    (tmp_path / "q.jsonl").write_text('{"_id": "q1", "text": "capital of France"}\n')
    lines = runner.invoke(app, ["ask", db, "--queries", str(tmp_path / "q.jsonl"), "--json", "-k", "1",
                                "--max-new-tokens", "2"])  # fmt: skip
    assert lines.exit_code == 0 and json.loads(lines.stdout)["query_id"] == "q1"
    for args, problem in [
        ([db, "   "], "question is empty"),
        ([db, question, "--cache", "maybe"], "cache must be one of"),
        ([db, "--queries", str(tmp_path / "q.jsonl")], "add --json"),
        ([str(tmp_path / "missing.db"), question], "no such index"),
        ([db, question, "--context-only", "--json"], "do not apply"),
        ([db, question, "--context-only", "--cache", "off"], "do not apply"),
    ]:
        failed = runner.invoke(app, ["ask", *args])
        assert failed.exit_code != 0 and problem in failed.output, (args, failed.output)
