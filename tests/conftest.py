"""Shared fixtures: a tiny real BPE tokenizer and tiny randomly initialised decoders of many architectures.

Each tiny model is written as an ordinary HF checkpoint directory, so tests load it as a user would.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from dec2vec.search import Document
from dec2vec.training.data import resolve

# Tiny models are faster on one thread, and one thread per process keeps the subprocess tests (training
# killed mid-run) from fighting over the cores: oversubscribed OpenMP makes tiny steps 100x slower.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

CORPUS = [
    "A man is playing a guitar on the street.",
    "Someone plays an instrument outside.",
    "The stock market fell sharply today after the announcement.",
    "Investors sold shares as prices dropped.",
    "A cat sleeps on the warm windowsill in the afternoon sun.",
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital and largest city of France.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "Query: what is the capital of France?",
    "Represent this sentence for retrieving relevant passages:",
]

VOCAB = 320
BOS, EOS, PAD = 1, 2, 0

# Decoders whose bidirectional switch works through transformers' generic is_causal mechanism.
SWITCHABLE = {
    "llama": {},
    "mistral": {},
    "qwen2": {},
    "qwen3": {},
    "gemma": {},
    "gemma2": {},
    "gemma3_text": {},
    "phi3": {},
    "phi": {},
    "olmo2": {},
    "granite": {},
    "starcoder2": {},
    "gpt_neox": {},
    "cohere": {},
    "stablelm": {},  # its sdpa path ignores the flag: dec2vec moves it to eager attention
    "opt": {"ffn_dim": 64, "word_embed_proj_dim": 32},
    "gpt2": {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 128},
    "gptj": {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 128, "rotary_dim": 4},
    "codegen": {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 128, "n_ctx": 128, "rotary_dim": 4},
}
# Decoders with their own mask code that ignores is_causal: dec2vec must refuse them with a clear error.
NOT_SWITCHABLE = {
    "bloom": {"n_layer": 2, "n_head": 4},
    "gpt_neo": {"num_layers": 2, "num_heads": 4, "attention_types": [[["global", "local"], 1]]},
    "falcon": {},
}


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on a few sentences; it prepends BOS, like Llama's tokenizer."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", BOS)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", padding_side="right"
    )


def tiny_config(arch: str, overrides: dict):
    kwargs = {
        "vocab_size": VOCAB,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "max_position_embeddings": 256,
        "pad_token_id": PAD,
        "bos_token_id": BOS,
        "eos_token_id": EOS,
        **overrides,
    }
    if arch in ("gpt2", "gptj", "codegen", "gpt_neo", "bloom", "falcon", "opt"):
        for key in ("intermediate_size", "num_key_value_heads", "head_dim"):
            kwargs.pop(key)
    return AutoConfig.for_model(arch, **kwargs)


@pytest.fixture(scope="session")
def make_tiny_checkpoint(tmp_path_factory, tiny_tokenizer):
    """Write (once per architecture) a tiny random checkpoint directory and return its path."""
    made: dict[str, Path] = {}

    def make(arch: str = "llama", padding_side: str = "right") -> Path:
        key = f"{arch}-{padding_side}"
        if key not in made:
            overrides = SWITCHABLE.get(arch, NOT_SWITCHABLE.get(arch, {}))
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(tiny_config(arch, overrides))
            path = tmp_path_factory.mktemp(key)
            model.save_pretrained(path)
            tiny_tokenizer.padding_side = padding_side
            tiny_tokenizer.save_pretrained(path)
            tiny_tokenizer.padding_side = "right"
            made[key] = path
        return made[key]

    return make


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Keep each test's GGUF cache out of the user's; the real SmolLM2 tests use their own shared home."""
    monkeypatch.setenv("DEC2VEC_HOME", str(tmp_path / "dec2vec-home"))


# Search corpora: real Wikipedia sentences bundled with the package.
SENTENCES = resolve("builtin:demo_sentences.txt").read_text().splitlines()


def corpus(n: int = 300, offset: int = 0) -> list[Document]:
    """Real Wikipedia sentences; 1% are French-tagged, years spread over 1900-1999."""
    return [
        Document(
            id=f"d{i}",
            text=SENTENCES[i],
            title=f"sentence {i}",
            metadata={"lang": "fr" if i % 100 == 0 else "en", "year": 1900 + i % 100, "group": i % 3},
        )
        for i in range(offset, offset + n)
    ]
