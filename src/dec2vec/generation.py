"""Generation from an encoder's own weights: causal, whatever attention the encoder embeds with.

``Encoder`` inherits these methods, so one object embeds and answers (GRIT). Needs of the host class:
``model`` (a causal LM), ``tokenizer``, ``device`` and ``_collate(ids, n_prefix, left=None)``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from dec2vec.attention import lm_logits

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Messages = list[dict[str, str]]


class GenerationError(RuntimeError):
    """Generation failed inside the model (its cause is chained); the stream ended instead of hanging."""


class _Stop(StoppingCriteria):
    """Stops generation when its event is set (the reader of a stream went away); counts the sequence."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event
        self.length = 0  # prompt + tokens generated so far

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> bool:
        self.length = input_ids.shape[1]
        return self.event.is_set()


def _check_prompts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        raise TypeError("expected a list of prompts, got a single string")
    return list(prompts)


class Generation:
    """Causal generation, streaming, and next-token probabilities on the host's weights."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    _collate: Any  # (ids, n_prefix, left=None) -> padded batch with attention_mask, from the host class

    def generate(self, prompt: str | Messages, **kwargs: Any) -> str:
        """Causal generation from the same weights (instruct and GRIT-trained backbones); greedy by default.

        ``prompt`` is plain text, or chat messages (``[{"role": "user", "content": ...}]``) put through the
        chat template; ``chat=True`` wraps plain text as one user turn. Options as for ``generate_stream``.
        """
        return "".join(self.generate_stream(prompt, **kwargs))

    def generate_stream(
        self,
        prompt: str | Messages,
        *,
        max_new_tokens: int = 64,
        chat: bool = False,
        temperature: float = 0.0,
        top_p: float = 1.0,
    ) -> Iterator[str]:
        """Generated text piece by piece as it is produced; closing the iterator early stops generation.

        An empty prompt, or one longer than the model's context, is refused (``ValueError``); a failure
        inside generation ends the stream by raising ``GenerationError`` rather than leaving it waiting.
        """
        yield from self.stream_ids(
            self._prompt_ids(prompt, chat),
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
        )

    def generate_batch(
        self,
        prompts: Sequence[str | Messages],
        *,
        max_new_tokens: int = 64,
        chat: bool = False,
        batch_size: int = 8,
    ) -> list[str]:
        """Greedy ``generate`` for many prompts, ``batch_size`` in one ``model.generate`` call each: rows
        are padded on the left whatever the tokenizer's side, so each continues from its own last token."""
        ids = [self._prompt_ids(p, chat) for p in _check_prompts(prompts)]
        for n, row in enumerate(ids):
            self._check_context(row, f"prompt {n}")
        out: list[str] = []
        with torch.inference_mode():
            for start in range(0, len(ids), batch_size):
                chunk = ids[start : start + batch_size]
                batch = self._collate(chunk, [0] * len(chunk), left=True)
                generated = self.model.generate(
                    input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"],
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
                width = batch["input_ids"].shape[1]
                out += self.tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
        return out

    def stream_ids(
        self,
        ids: list[int],
        *,
        past_key_values: Any = None,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        usage: dict[str, int] | None = None,
    ) -> Iterator[str]:
        """``generate_stream`` for a prompt already tokenized; ``past_key_values`` may hold the causal states
        of a prefix of ``ids`` (see ``kv_cache.PrefixCache``), which are then not computed again. At the
        end, ``usage["new_tokens"]`` (when given) is how many tokens were generated."""
        self._check_context(ids, "the prompt")
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        stop = threading.Event()
        counter = _Stop(stop)
        failure: list[BaseException] = []
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {}

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(
                        input_ids=torch.tensor([ids], device=self.device),
                        attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=self.device),
                        max_new_tokens=max_new_tokens,
                        pad_token_id=self.tokenizer.pad_token_id,
                        cache=past_key_values,
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([counter]),
                        **({"do_sample": False} | sampling),
                    )
            except BaseException as err:  # the streamer waits for an end that a failed generate never sends
                failure.append(err)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)  # model.generate only streams from a thread
        worker.start()
        try:
            yield from streamer
        finally:
            stop.set()
            worker.join()
            if usage is not None:
                usage["new_tokens"] = max(counter.length - len(ids), 0)
        if failure:
            raise GenerationError(f"generation failed: {failure[0]!r}") from failure[0]

    def prompt_tokens(self, prompt: str | Messages, *, chat: bool = False) -> int:
        """How many tokens ``generate`` would feed the model for this prompt (``ValueError`` if empty)."""
        return len(self._prompt_ids(prompt, chat))

    @property
    def context_length(self) -> int:
        """The most tokens a prompt plus its answer may take (the backbone's position limit)."""
        return int(getattr(self.model.config, "max_position_embeddings", None) or 2048)

    def _check_context(self, ids: list[int], name: str) -> None:
        """Refuse a prompt longer than the model's context, naming it (``ValueError``)."""
        if len(ids) > self.context_length:
            raise ValueError(f"{name} is {len(ids)} tokens: the model's context is {self.context_length}")

    def _prompt_ids(self, prompt: str | Messages, chat: bool) -> list[int]:
        """Token ids of a generation prompt: chat messages (or text, with ``chat``) via the chat template."""
        said = prompt if isinstance(prompt, str) else "".join(str(m.get("content", "")) for m in prompt)
        if not said.strip():
            raise ValueError("the prompt is empty")
        if isinstance(prompt, str):
            messages = [{"role": "user", "content": prompt}] if chat else None
        else:
            messages = prompt
        if messages is not None and self.tokenizer.chat_template:  # the template writes the special tokens
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if messages is not None:  # no template: the turns' contents, one per line
            prompt = "\n".join(m["content"] for m in messages)
        return self.tokenizer(prompt)["input_ids"]

    def next_token_probabilities(
        self, prompts: Sequence[str], *, chat: bool = False, batch_size: int = 8
    ) -> torch.Tensor:
        """The causal model's next-token distribution after each prompt, ``(len(prompts), vocab)`` float32.

        The scoring side of generation (a generative reranker reads P("yes") from it).
        """
        ids = [self._prompt_ids(p, chat) for p in _check_prompts(prompts)]
        out = []
        with torch.inference_mode():
            for start in range(0, len(ids), batch_size):
                chunk = ids[start : start + batch_size]
                batch = self._collate(chunk, [0] * len(chunk))
                mask = batch["attention_mask"]
                last = mask.cumsum(1).argmax(1)  # each row's last real token
                at = torch.zeros_like(mask, dtype=torch.bool)
                at[torch.arange(len(chunk)), last] = True
                rows = lm_logits(self.model, batch["input_ids"], mask, causal=True, at=at).float()
                out.append(torch.softmax(rows, dim=-1).cpu())
        return torch.cat(out)

    def continuation_logprobs(
        self, prompts: Sequence[str | Messages], text: str, *, chat: bool = False, batch_size: int = 8
    ) -> list[float]:
        """The log-probability of the same ``text`` as the continuation of each prompt (the sum over its
        tokens): how well each prompt explains ``text``, read from the causal model, not parsed free text."""
        heads = [self._prompt_ids(prompt, chat) for prompt in prompts]
        tail = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not heads or not tail:
            raise ValueError("continuation_logprobs needs at least one prompt and a non-empty text")
        out = []
        with torch.inference_mode():
            for start in range(0, len(heads), batch_size):
                chunk = heads[start : start + batch_size]
                batch = self._collate([head + tail for head in chunk], [0] * len(chunk))
                mask = batch["attention_mask"]
                # every row ends with the tail (padding on either side); logits at p predict token p + 1
                end = mask.cumsum(1).argmax(1) + 1  # one past each row's last real token
                positions = end[:, None] - len(tail) - 1 + torch.arange(len(tail), device=mask.device)
                at = torch.zeros_like(mask, dtype=torch.bool)
                at[torch.arange(len(chunk), device=mask.device)[:, None], positions] = True
                logits = lm_logits(self.model, batch["input_ids"], mask, causal=True, at=at)
                scores = torch.log_softmax(logits.float(), dim=-1).view(len(chunk), len(tail), -1)
                wanted = torch.tensor(tail, device=scores.device).expand(len(chunk), -1)
                out += scores.gather(2, wanted.unsqueeze(-1)).squeeze(-1).sum(1).tolist()
        return out
