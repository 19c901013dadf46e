"""`dec2vec ask` without hand labels: cloze questions from held-apart Wikipedia paragraphs, and caching speed.

    python benchmarks/ask.py [--model smollm2-135m-embed] [--questions 60] [--k 4]

Corpus: the WikiText-2 test paragraphs that no bundled training pair was cut from (held apart from the
shipped model's training), indexed with 1,000 WikiSplit sentences as distractors. Each question blanks one
year or number (else a capitalised name) in a sentence of a paragraph of over 40 words; the answer is
right if it contains the blanked span. Reported: retrieval recall@k (the paragraph among the k passages),
answer accuracy with retrieval (`Answerer.ask`) and without (the same question, no passages).

Caching, on grounded prompts of 4 passages of 256 tokens (consecutive windows of the held-apart text): time
to first token and tokens/s with no cache, with new passages (a miss that fills the cache; the cached
instruction alone is below PrefixCache's min_reuse share, so it is recomputed), and with the whole context
cached (the same passages again), plus whether greedy output is identical to no cache.

Prints tables and writes benchmarks/results/ask.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import argparse
import json
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from ship import held_out_paragraphs  # benchmarks/ship.py

from dec2vec.answering import Answerer
from dec2vec.kv_cache import PrefixCache
from dec2vec.models import load_model
from dec2vec.search import Document, Index
from dec2vec.search.index import Hit

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"
console = Console(width=200)
NUMBER = re.compile(r"\b\d[\d,.]*\d\b|\b\d\b")
NAME = re.compile(r"\b[A-Z]\w+(?: [A-Z]\w+)*")  # a whole name (cloze takes one after a lowercase word)
SENTENCE = re.compile(r"(?<=[.!?]) (?=[A-Z])")


def cloze(paragraph: str) -> tuple[str, str] | None:
    """(sentence with ____, the blanked span) from the paragraph's first sentence that has a number, else a
    name inside it; None if no sentence of 8 to 40 words has either."""
    sentences = [s for s in SENTENCE.split(paragraph) if 8 <= len(s.split()) <= 40]
    for pattern in (NUMBER, NAME):
        for sentence in sentences:
            for match in pattern.finditer(sentence):
                before = sentence[: match.start()].split()
                if pattern is NAME and (not before or not before[-1].strip(",").islower()):
                    continue  # the end of a longer name ("Du Fu"): blank the whole name or nothing
                return sentence[: match.start()] + "____" + sentence[match.end() :], match.group(0)
    return None


def contains(answer: str, span: str) -> bool:
    return span.lower().replace(",", "") in answer.lower().replace(",", "")


def quality(answerer: Answerer, questions: list[dict], k: int, max_new_tokens: int) -> dict:
    found = right = right_alone = 0
    for q in questions:
        answer = answerer.ask(q["question"], k=k, max_new_tokens=max_new_tokens, cache="off")
        found += any(s.id == q["paragraph"] for s in answer.sources)
        right += contains(answer.text, q["span"])
        alone = answerer.generator.generate(q["question"], chat=True, max_new_tokens=max_new_tokens)
        right_alone += contains(alone, q["span"])
        q |= {"answer": answer.text, "answer_without_retrieval": alone}
    n = len(questions)
    return {
        "questions": n,
        f"recall@{k}": round(found / n, 4),
        "accuracy with retrieval": round(right / n, 4),
        "accuracy without retrieval": round(right_alone / n, 4),
    }


def caching(encoder, paragraphs: list[str], rounds: int, max_new_tokens: int) -> list[dict]:
    """TTFT and tokens/s per cache mode on 4 x 256-token passages; identical greedy output vs no cache."""
    tokenizer = encoder.tokenizer
    stream = tokenizer("\n".join(paragraphs), add_special_tokens=False)["input_ids"]
    # consecutive 256-token windows of the held-apart text; 4 more for the warm-up
    cut = [tokenizer.decode(stream[256 * i : 256 * (i + 1)]) for i in range(4 * rounds + 4)]
    groups = [
        [Hit(f"p{4 * r + i}", 1.0, {}, text, "", {}, 0) for i, text in enumerate(cut[4 * r : 4 * r + 4])]
        for r in range(rounds + 1)
    ]
    answerer = Answerer(None, encoder, cache=PrefixCache(max_mib=2048))  # no index: the passages are given
    modes: dict[str, list[dict]] = {
        "no cache": [],
        "new passages (a miss: fills the cache)": [],
        "whole context cached": [],
    }
    same = dict.fromkeys(modes, 0)
    question = "What are these passages about? Answer in one sentence."
    # warm-up on passages not measured: threads, allocator, and the instruction's states
    answerer.ask(question, hits=groups.pop(), max_new_tokens=2)
    for hits in groups:
        off = answerer.ask(question, hits=hits, max_new_tokens=max_new_tokens, cache="off")
        cold = answerer.ask(question, hits=hits, max_new_tokens=max_new_tokens)  # only the instruction known
        warm = answerer.ask(question, hits=hits, max_new_tokens=max_new_tokens)  # the same passages again
        for name, answer in zip(modes, (off, cold, warm), strict=True):
            modes[name].append(answer.timings)
            same[name] += answer.text == off.text
    rows = []
    for name, timings in modes.items():
        rows.append(
            {
                "mode": name,
                "prompt tokens": round(statistics.mean(t["prompt_tokens"] for t in timings)),
                "reused tokens": round(statistics.mean(t["reused_tokens"] for t in timings)),
                "time to first token s": round(statistics.median(t["first_token_s"] for t in timings), 3),
                "new tokens/s": round(statistics.median(t.get("tokens_per_s", 0.0) for t in timings), 1),
                "greedy output identical to no cache": f"{same[name]}/{len(groups)}",
            }
        )
    base = rows[0]["time to first token s"]
    for row in rows:
        row["TTFT speed-up"] = round(base / row["time to first token s"], 2)
    return rows


def show(title: str, rows: list[dict]) -> None:
    table = Table(*rows[0].keys(), title=title)
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-embed:bfloat16")
    parser.add_argument("--questions", type=int, default=60)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=8, help="caching: groups of 4 passages")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--distractors", type=int, default=1000, help="WikiSplit sentences indexed too")
    parser.add_argument(
        "--only", choices=["quality", "caching"], help="run one part, keep the other's results"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ask.json")
    args = parser.parse_args()
    encoder = load_model(args.model)
    paragraphs = held_out_paragraphs(10_000)
    distractors = (DATA / "training" / "wikisplit_sentences.txt").read_text().splitlines()
    distractors = distractors[len(distractors) - args.distractors :]
    questions = []
    for number, paragraph in enumerate(paragraphs):
        if len(paragraph.split()) > 40 and (blank := cloze(paragraph)) is not None:
            text = f"Fill in the blank (____): {blank[0]}"
            questions.append({"paragraph": f"w{number}", "question": text, "span": blank[1]})
    questions = questions[: args.questions]
    documents = [Document(f"w{i}", p) for i, p in enumerate(paragraphs)]
    documents += [Document(f"s{i}", s) for i, s in enumerate(distractors)]
    result = json.loads(args.out.read_text()) if args.only and args.out.exists() else {}
    result |= {
        "model": args.model,
        "corpus": f"{len(paragraphs)} held-apart WikiText-2 paragraphs, {len(distractors)} WikiSplit lines",
    }
    if args.only != "caching":
        with tempfile.TemporaryDirectory() as tmp, Index(str(Path(tmp) / "ask.db"), encoder) as index:
            start = time.perf_counter()
            index.add(documents, show_progress=True)
            result["index_seconds"] = round(time.perf_counter() - start, 1)
            result["answers"] = quality(Answerer(index), questions, args.k, args.max_new_tokens)
            result["examples"] = questions[:5]
    if args.only != "quality":
        # bfloat16 rounds a prefill split at segment boundaries differently from one whole prefill, so
        # greedy output can differ from no cache there; float32 shows whether the reuse itself is exact.
        cache_rows = [{"dtype": str(encoder.model.dtype).removeprefix("torch."), **row}
                      for row in caching(encoder, paragraphs, args.rounds, args.max_new_tokens)]  # fmt: skip
        if encoder.model.dtype != torch.float32:
            del encoder
            exact = load_model(args.model.replace(":bfloat16", "") + ":float32")
            exact_rows = caching(exact, paragraphs, args.rounds, args.max_new_tokens)
            cache_rows += [{"dtype": "float32", **row} for row in exact_rows]
        result["caching"] = cache_rows
    answers, cache_rows = result["answers"], result["caching"]
    show("cloze answers", [answers])
    show("key-value caching (4 x 256-token passages)", cache_rows)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    console.print_json(json.dumps({k: v for k, v in result.items() if k != "examples"}))


if __name__ == "__main__":
    main()
