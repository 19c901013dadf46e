"""Write the bundled question → passage pairs: the shipped encoder asks a question of each passage itself.

Retrieval queries are questions ("what similarity laws must be obeyed ...?"), but the bundled
inverse-cloze pairs pair a *statement* with its paragraph. Here the same weights that embed write one
search question per inverse-cloze passage (greedy, one worked example in the chat, GRIT's generative
half put to work); the pairs become training data for a distillation stage, where the teacher's
similarities, not the pairing alone, say how well each question fits each passage. Resumable: rows
already written are kept and the run goes on after them.

    python benchmarks/make_questions.py            # ~15 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tqdm import tqdm

from dec2vec import Encoder
from dec2vec.training.data import read_pairs

DATA = Path(__file__).resolve().parents[1] / "src" / "dec2vec" / "data"
EXAMPLE = (
    "The Eiffel Tower was built for the 1889 World's Fair in Paris. It was designed by the company of "
    "Gustave Eiffel and is 330 metres tall.",
    "Who designed the Eiffel Tower and when was it built?",
)
ASK = "Passage: {passage}\n\nWrite a search question that this passage answers."


def chat(passage: str) -> list[dict[str, str]]:
    """The generation prompt for one passage: the worked example, then the passage."""
    return [
        {"role": "user", "content": ASK.format(passage=EXAMPLE[0])},
        {"role": "assistant", "content": EXAMPLE[1]},
        {"role": "user", "content": ASK.format(passage=passage)},
    ]


def usable(question: str, passage: str) -> bool:
    """One question, of search length, about this passage rather than the worked example."""
    borrowed = {w for w in EXAMPLE[0].split() if w[:1].isupper()} - set(passage.split())
    return (
        question.endswith("?")
        and question.count("?") == 1
        and "\n" not in question
        and 4 <= len(question.split()) <= 30
        and not borrowed & set(question.replace("?", " ").split())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-embed")
    parser.add_argument("--source", default="builtin:retrieval_ict_pairs.jsonl")
    parser.add_argument("--out", type=Path, default=DATA / "retrieval_question_pairs.jsonl")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    args = parser.parse_args()

    passages = [pair.positive for pair in read_pairs(args.source)]
    # Progress is the count of passages tried, kept beside the output so that a rerun resumes.
    progress = args.out.with_suffix(".progress")
    start = int(progress.read_text()) if progress.exists() and args.out.exists() else 0
    if start == 0:
        args.out.write_text("")
    encoder = Encoder.load(args.model, dtype="bfloat16")
    began, kept = time.perf_counter(), 0
    for at in tqdm(
        range(start, len(passages), args.batch_size),
        desc="questions",
        initial=start // args.batch_size,
        total=-(-len(passages) // args.batch_size),
    ):
        batch = passages[at : at + args.batch_size]
        questions = encoder.generate_batch(
            [chat(p) for p in batch], max_new_tokens=args.max_new_tokens, batch_size=args.batch_size
        )
        rows = [
            {"query": q.strip(), "positive": p}
            for q, p in zip(questions, batch, strict=True)
            if usable(q.strip(), p)
        ]
        with args.out.open("a") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        kept += len(rows)
        progress.write_text(str(at + len(batch)))
    progress.unlink(missing_ok=True)
    total = len(args.out.read_text().splitlines())
    print(
        f"{total} question pairs from {len(passages)} passages in {args.out} "
        f"({kept} this run, {time.perf_counter() - began:.0f} s)"
    )


if __name__ == "__main__":
    main()
