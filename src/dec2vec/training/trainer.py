"""One training stage on an Encoder: LoRA (peft) or full fine-tuning, checkpoints, exact resume.

A stage runs ``steps`` optimizer steps of one objective (see ``OBJECTIVES``) over a batch plan fixed by the
seed; with ``generation_data`` any objective also keeps a next-token loss on the same weights (GRIT).
Every ``checkpoint_every`` steps, and on SIGINT/SIGTERM, the trainable weights, optimizer, scheduler, RNG
states and step are written atomically to ``checkpoint.pt``; resuming from it reproduces the uninterrupted
run. At the end LoRA is merged into the weights.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import signal
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from torch.utils.hooks import RemovableHandle
from tqdm.auto import tqdm
from transformers import get_scheduler

from dec2vec.attention import lm_logits, supports_packing
from dec2vec.backbone import decoder_layers
from dec2vec.encoder import Encoder, preferred_dtype
from dec2vec.files import DataFormatError
from dec2vec.training import data as data_io
from dec2vec.training import distributed
from dec2vec.training.grad_cache import cached_embeddings
from dec2vec.training.objectives import (
    causal_labels,
    info_nce,
    mask_tokens,
    shifted_targets,
    similarity_distillation,
    token_loss,
)

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was written and ``--resume`` continues from it."""


@dataclass
class StageConfig:
    """One stage of a recipe; every field can be set in the recipe's ``[[stage]]`` table."""

    name: str
    objective: str  # a key of OBJECTIVES
    # paths or builtin:NAME (pairs for supervised/grit), or {path = ..., instruction = ...} tables giving a
    # dataset its own query instruction
    data: list[str | dict[str, str]] = field(default_factory=list)
    # text for a next-token loss (weight lambda_gen) on the same weights: required by grit, allowed by all
    generation_data: list[str] = field(default_factory=list)
    teacher: str | None = None  # distill: a model spec (mpnet, minilm, a saved encoder ...)
    instruction: str = ""  # default query-side instruction (supervised, grit): attended to, never pooled
    steps: int = 100
    batch_size: int = 16
    grad_accum: int = 1
    learning_rate: float = 1e-4
    schedule: Literal["linear", "cosine", "constant_with_warmup"] = "linear"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lora: bool = True
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    # >0: adapters on the top N decoder layers only; nothing below them needs gradients, so the backward
    # pass stops there (fewer FLOPs per step, less activation memory). 0: every layer.
    lora_layers: int = 0
    max_length: int = 128
    temperature: float = 0.05
    mask_probability: float = 0.2
    mask_strategy: Literal["80/10/10", "all-mask"] = "80/10/10"
    mask_token: str | None = None  # default: the tokenizer's mask token, else "_", else unk/eos
    dropout: float = 0.0  # the model's own dropout (attention, hidden) while training, e.g. 0.1-0.3
    residual_dropout: float = 0.0  # dropout on each layer's residual update (see add_residual_dropout)
    global_negatives: bool = True  # distributed runs: every process's keys are negatives (all-gather)
    fsdp: bool = False  # distributed runs: shard decoder layers, their gradients and optimizer state (FSDP2)
    grad_cache_chunk: int = 0  # >0: contrastive batches embedded in chunks of this size (GradCache)
    lambda_rep: float = 1.0  # contrastive term (supervised, grit; distill on pairs when > 0)
    lambda_gen: float = 1.0
    lambda_distill: float = 1.0
    distill_loss: Literal["kl", "mse"] = "kl"  # see objectives.similarity_distillation
    # KL's softmax temperature; None: ``temperature``. Softer than InfoNCE's, the teacher's row keeps
    # how close each negative is, not only which text is the positive.
    distill_temperature: float | None = None
    # >0: the last N texts' vectors (student's detached, teacher's) join every row of the distillation
    # (see objectives.similarity_distillation). Not checkpointed: a resumed run refills it.
    distill_memory: int = 0
    # bfloat16 autocast (CPU and CUDA); None: where the device computes it natively (preferred_dtype),
    # since emulated, it made a supervised SmolLM2 step 15x slower (0.21 vs 3.1 examples/s) on a Zen 3 CPU.
    bf16: bool | None = None
    gradient_checkpointing: bool = False
    checkpoint_every: int = 50
    log_every: int = 1
    seed: int = 42

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"stage {self.name!r}: unknown objective {self.objective!r} (one of {', '.join(OBJECTIVES)})"
            )
        spec = OBJECTIVES[self.objective]
        if spec.needs_generation_data and not self.generation_data:
            raise ValueError(
                f"stage {self.name!r}: {self.objective} needs generation_data (text for the next-token loss)"
            )
        if spec.needs_teacher != (self.teacher is not None):
            raise ValueError(f"stage {self.name!r}: a teacher is what a distill stage needs, and only it")
        if self.distill_loss not in ("kl", "mse"):
            raise ValueError(f"stage {self.name!r}: distill_loss must be 'kl' or 'mse'")
        if self.lora_layers < 0 or (self.lora_layers and not self.lora):
            raise ValueError(f"stage {self.name!r}: lora_layers is a count >= 0 and applies with lora only")
        distill_only = (
            self.distill_loss != "kl"
            or self.lambda_distill != 1.0
            or self.distill_temperature is not None
            or self.distill_memory != 0
        )
        if not spec.needs_teacher and distill_only:
            raise ValueError(
                f"stage {self.name!r}: distill_loss, distill_temperature, distill_memory and lambda_distill"
                " apply to distill stages only"
            )
        if self.distill_memory < 0:
            raise ValueError(f"stage {self.name!r}: distill_memory is a count of texts >= 0")
        if self.distill_temperature is not None and self.distill_loss != "kl":
            raise ValueError(f"stage {self.name!r}: distill_temperature applies to distill_loss = 'kl' only")

    @classmethod
    def from_dict(cls, table: dict[str, Any]) -> StageConfig:
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(table) - known):
            raise ValueError(f"stage {table.get('name', '?')!r}: unknown keys {unknown}")
        return cls(**table)


def set_dropout(model: torch.nn.Module, p: float) -> None:
    """Set every dropout rate in the model (nn.Dropout modules and attention-dropout attributes)."""
    for name, module in model.named_modules():
        if "lora_" in name:  # LoRA dropout keeps its own configured rate
            continue
        if isinstance(module, torch.nn.Dropout):
            module.p = p
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = p


def add_residual_dropout(model: torch.nn.Module, p: float) -> list[RemovableHandle]:
    """Drop out each decoder layer's update to the residual stream while training; returns the hooks.

    Llama-family models have no hidden dropout, so SimCSE twins would differ by attention dropout alone,
    too weak an augmentation to learn from. A hook on every layer gives BERT-style hidden dropout to any
    architecture: ``output = input + dropout(output - input)``.
    """

    def hook(layer: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        if not layer.training:
            return output
        before = args[0] if args else kwargs["hidden_states"]
        after = output[0] if isinstance(output, tuple) else output
        dropped = before + torch.nn.functional.dropout(after - before, p, training=True)
        return (dropped, *output[1:]) if isinstance(output, tuple) else dropped

    return [layer.register_forward_hook(hook, with_kwargs=True) for layer in decoder_layers(model)]


def _top_linear_layers(model: torch.nn.Module, config: StageConfig) -> list[str]:
    """The names of the linear modules in the top ``lora_layers`` decoder layers (peft's own
    ``layers_to_transform`` does not combine with "all-linear")."""
    layers = decoder_layers(model)
    if config.lora_layers > len(layers):
        raise ValueError(f"stage {config.name!r}: lora_layers {config.lora_layers} > {len(layers)} layers")
    top = {id(m) for layer in layers[-config.lora_layers :] for m in layer.modules()}
    return [name for name, m in model.named_modules() if id(m) in top and isinstance(m, torch.nn.Linear)]


def _mask_token_id(encoder: Encoder, configured: str | None) -> int:
    tokenizer = encoder.tokenizer
    if configured is not None:
        ids = tokenizer.convert_tokens_to_ids([configured])
        if ids[0] is None or ids[0] == tokenizer.unk_token_id:
            raise ValueError(f"mask_token {configured!r} is not in the vocabulary")
        return ids[0]
    if tokenizer.mask_token_id is not None:
        return tokenizer.mask_token_id
    underscore = tokenizer.convert_tokens_to_ids(["_"])[0]  # LLM2Vec's choice for tokenizers without <mask>
    if underscore is not None and underscore != tokenizer.unk_token_id:
        return underscore
    return tokenizer.unk_token_id if tokenizer.unk_token_id is not None else tokenizer.eos_token_id


@dataclass
class StageData:
    """A stage's examples (one list per file) and its fixed batch plan(s)."""

    datasets: list[list]
    instructions: list[str]  # per dataset
    plan: list[tuple[int, list[int]]]
    generation_texts: list[str] = field(default_factory=list)
    generation_plan: list[tuple[int, list[int]]] = field(default_factory=list)


def load_stage_data(c: StageConfig, replicas: int = 1) -> StageData:
    """Read and check every file of a stage (file:line errors) and fix its plan of global batches.

    With ``replicas`` processes, each global batch holds ``batch_size`` examples per process.
    """
    if not c.data:
        raise DataFormatError(f"stage {c.name!r}: no data")
    wanted = OBJECTIVES[c.objective].data
    datasets: list[list] = []
    instructions: list[str] = []
    for entry in c.data:
        entry = {"path": entry} if isinstance(entry, str) else entry
        if not isinstance(entry.get("path"), str) or set(entry) - {"path", "instruction"}:
            raise DataFormatError(f"stage {c.name!r}: data entries are paths or {{path, instruction}} tables")
        path = entry["path"]
        pairs = data_io.is_pair_file(path)
        if wanted != "any" and (wanted == "pairs") != pairs:
            want = (
                "pairs JSONL (query, positive)" if wanted == "pairs" else "text (.txt, or JSONL with 'text')"
            )
            raise DataFormatError(f"{path}: stage {c.name!r} ({c.objective}) needs {want}")
        datasets.append(data_io.read_pairs(path) if pairs else data_io.read_texts(path))
        instructions.append(entry.get("instruction", c.instruction))
    lengths = [[len(x.query if isinstance(x, data_io.Pair) else x) for x in d] for d in datasets]
    total = c.steps * c.grad_accum
    size = c.batch_size * replicas
    data = StageData(datasets, instructions, data_io.batch_plan(lengths, size, total, c.seed))
    if c.generation_data:
        data.generation_texts = [t for p in c.generation_data for t in data_io.read_texts(p)]
        data.generation_plan = data_io.batch_plan(
            [[len(t) for t in data.generation_texts]], size, total, c.seed + 1
        )
    return data


class StageTrainer:
    """Runs one stage on ``encoder`` (whose model it trains in place), writing into ``directory``."""

    def __init__(self, encoder: Encoder, config: StageConfig, directory: Path) -> None:
        self.encoder, self.config, self.dir = encoder, config, directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.data = load_stage_data(config, self.world)  # malformed data fails here, before any change
        torch.manual_seed(config.seed)
        model = encoder.model
        # LM-head losses run packed where the model gives the same states packed (checked as at load)
        self.packing = {causal: supports_packing(model, causal=causal) for causal in (True, False)}
        if config.lora:
            lora = LoraConfig(
                r=config.lora_rank,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                target_modules=_top_linear_layers(model, config) if config.lora_layers else "all-linear",
            )
            # peft injects the adapters into encoder.model in place; the PeftModel is kept for merging.
            self.peft = get_peft_model(model, lora)
        else:
            self.peft = None
            model.requires_grad_(True)  # a previous LoRA stage leaves the base weights frozen
        if config.gradient_checkpointing:
            no_reentrant = {"use_reentrant": False}
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.23 renamed it
                model.activation_checkpointing_enable(activation_checkpointing_kwargs=no_reentrant)
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=no_reentrant)
            model.enable_input_require_grads()
        self.sharded = config.fsdp and self.world > 1
        if self.sharded:
            distributed.shard_decoder_layers(model)
        trainable = [p for p in self._trainable_modules().parameters() if p.requires_grad]
        if encoder.latent is not None:
            trainable += list(encoder.latent.parameters())
        self.params = trainable
        self.optimizer = torch.optim.AdamW(
            trainable, lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.scheduler = get_scheduler(
            config.schedule,
            self.optimizer,
            num_warmup_steps=math.ceil(config.warmup_ratio * config.steps),
            num_training_steps=config.steps,
        )
        self.generator = torch.Generator().manual_seed(config.seed)
        self.bf16 = preferred_dtype()[0] == "bfloat16" if config.bf16 is None else config.bf16
        self.step = 0
        # distill_memory's last texts: the student's vectors (detached) and the teacher's, (m, d_s), (m, d_t)
        self.memory: tuple[torch.Tensor, torch.Tensor] | None = None
        masks = OBJECTIVES[config.objective].masks_tokens
        self.mask_id = _mask_token_id(encoder, config.mask_token) if masks else None
        self.teacher_vectors = self._load_teacher_vectors() if config.teacher is not None else {}
        self._stop_signal: int | None = None

    def _collate(self, texts: list[str], prefix: str = "") -> dict[str, torch.Tensor]:
        return self.encoder.collate(texts, prefix=prefix, max_length=self.config.max_length)

    # ---- objectives -------------------------------------------------------------------------------------

    def _loss(self, micro: int) -> dict[str, torch.Tensor]:
        """The weighted loss of micro-batch ``micro`` under ``"loss"``, and each term by name when several."""
        c = self.config
        dataset, indices = self.data.plan[micro]
        examples = [self.data.datasets[dataset][i] for i in self._mine(indices)]
        terms = OBJECTIVES[c.objective].terms(self, examples, self.data.instructions[dataset])
        if self.data.generation_plan:
            _, gen_indices = self.data.generation_plan[micro]
            gen = self._collate([self.data.generation_texts[i] for i in self._mine(gen_indices)])
            labels = causal_labels(gen["input_ids"], gen["attention_mask"])
            terms["gen_loss"] = self._token_loss(gen["input_ids"], gen["attention_mask"], labels, causal=True)
        weights = {"rep_loss": c.lambda_rep, "gen_loss": c.lambda_gen, "distill_loss": c.lambda_distill}
        loss = sum(weights.get(name, 1.0) * term for name, term in terms.items())
        return {"loss": loss, **terms} if len(terms) > 1 else {"loss": loss}

    def _mntp(self, texts: list[str], instruction: str) -> dict[str, torch.Tensor]:
        batch = self._collate(texts)
        tok = self.encoder.tokenizer
        corrupted, labels = mask_tokens(
            batch["input_ids"],
            batch["attention_mask"],
            mask_token_id=self.mask_id,
            vocab_size=self.encoder.model.config.get_text_config().vocab_size,
            special_ids=tok.all_special_ids,
            probability=self.config.mask_probability,
            strategy=self.config.mask_strategy,
            generator=self.generator,
        )
        return {"mntp_loss": self._token_loss(corrupted, batch["attention_mask"], labels, causal=False)}

    def _simcse(self, texts: list[str], instruction: str) -> dict[str, torch.Tensor]:
        views = self._embed(texts), self._embed(texts)  # the same texts twice: dropout makes them differ
        c = self.config
        return {"rep_loss": info_nce(*views, c.temperature, global_negatives=c.global_negatives)}

    def _contrastive(self, pairs: list[data_io.Pair], instruction: str) -> dict[str, torch.Tensor]:
        queries = self._embed([p.query for p in pairs], instruction)
        keys = [p.positive for p in pairs] + [n for p in pairs for n in p.negatives]
        c = self.config
        return {
            "rep_loss": info_nce(
                queries, self._embed(keys), c.temperature, global_negatives=c.global_negatives
            )
        }

    def _distill(self, examples: list, instruction: str) -> dict[str, torch.Tensor]:
        """The teacher's in-batch similarity structure over all the batch's texts (of pairs: every text)."""
        c = self.config
        if not isinstance(examples[0], data_io.Pair):
            return {
                "distill_loss": self._similarity_distillation(self._embed(examples), self._teacher(examples))
            }
        queries = self._embed([p.query for p in examples], instruction)
        key_texts = [p.positive for p in examples] + [n for p in examples for n in p.negatives]
        keys = self._embed(key_texts)
        teacher = self._teacher([p.query for p in examples] + key_texts)
        terms = {"distill_loss": self._similarity_distillation(torch.cat([queries, keys]), teacher)}
        if c.lambda_rep > 0:
            terms["rep_loss"] = info_nce(queries, keys, c.temperature, global_negatives=c.global_negatives)
        return terms

    def _similarity_distillation(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """The stage's distillation loss, against the memory of earlier texts too; then they join it."""
        c = self.config
        tau = c.temperature if c.distill_temperature is None else c.distill_temperature
        loss = similarity_distillation(student, teacher, tau, kind=c.distill_loss, memory=self.memory)
        if c.distill_memory:
            kept_student, kept_teacher = student.detach(), teacher.to(student.device)
            if self.memory is not None:
                kept_student, kept_teacher = (
                    torch.cat([self.memory[0], kept_student]),
                    torch.cat([self.memory[1], kept_teacher]),
                )
            self.memory = kept_student[-c.distill_memory :], kept_teacher[-c.distill_memory :]
        return loss

    def _teacher(self, texts: list[str]) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.teacher_vectors[t] for t in texts]))

    def _load_teacher_vectors(self) -> dict[str, np.ndarray]:
        """The teacher's vectors of every text this process trains on, computed once and cached on disk."""
        from dec2vec.backbone import dec2vec_home
        from dec2vec.evaluation.cache import CachedEncoder
        from dec2vec.models import load_model

        texts: set[str] = set()
        for dataset, indices in self.data.plan:
            for example in (self.data.datasets[dataset][i] for i in self._mine(indices)):
                if isinstance(example, data_io.Pair):
                    texts.update([example.query, example.positive, *example.negatives])
                else:
                    texts.add(example)
        ordered = sorted(texts)
        teacher = CachedEncoder(load_model(self.config.teacher), dec2vec_home() / "embeddings")
        log.warning(
            "teacher %s: vectors of %d texts (cached after the first run)", self.config.teacher, len(ordered)
        )
        return dict(zip(ordered, teacher.encode(self._student_view(ordered)), strict=True))

    def _student_view(self, texts: list[str]) -> list[str]:
        """The part of each text the student reads at the stage's max_length: the teacher embeds the same
        text, not a longer one the student never sees (and long paragraphs cost the teacher no time)."""
        enc = self.encoder.tokenizer(
            texts, truncation=True, max_length=self.config.max_length, return_offsets_mapping=True
        )
        return [
            text[: max((end for _, end in spans), default=len(text))]
            for text, spans in zip(texts, enc["offset_mapping"], strict=True)
        ]

    def _mine(self, indices: list[int]) -> list[int]:
        """This process's slice of a global batch."""
        size = self.config.batch_size
        return indices[self.rank * size : (self.rank + 1) * size]

    def _embed(self, texts: list[str], prefix: str = "") -> torch.Tensor:
        """Pooled embeddings of ``texts``; with ``grad_cache_chunk`` set, through GradCache in chunks."""
        size = self.config.grad_cache_chunk
        if not size or len(texts) <= size:
            return self.encoder.embed_batch(self._collate(texts, prefix))
        chunks = [self._collate(texts[i : i + size], prefix) for i in range(0, len(texts), size)]
        return cached_embeddings(self.encoder.embed_batch, chunks, self.encoder.device)

    def _token_loss(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor, *, causal: bool
    ) -> torch.Tensor:
        """Cross-entropy of the LM head, computed only where a label waits and packed where that helps."""
        at, targets = shifted_targets(labels, attention_mask)
        model = self.encoder.model
        logits = lm_logits(model, input_ids, attention_mask, causal=causal, at=at, pack=self.packing[causal])
        return token_loss(logits, targets)

    # ---- loop -------------------------------------------------------------------------------------------

    def _trainable_modules(self) -> torch.nn.Module:
        return self.peft if self.peft is not None else self.encoder.model

    def _autocast(self):
        if not self.bf16:
            return nullcontext()
        return torch.autocast(self.encoder.device.type, dtype=torch.bfloat16)

    def run(self, resume: bool = False) -> None:
        """Train to ``steps``, resuming from ``checkpoint.pt`` if asked and present; then merge LoRA."""
        c = self.config
        if resume and (self.dir / CHECKPOINT).exists():
            self._restore()
        model = self.encoder.model
        model.train()
        set_dropout(model, c.dropout)
        hooks = add_residual_dropout(model, c.residual_dropout) if c.residual_dropout else []
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        log_file = None  # the main process logs
        if distributed.is_main():
            log_file = (self.dir / "log.jsonl").open("a" if self.step else "w")
        sharding = f", FSDP over {self.world}" if self.sharded else ""
        bar = tqdm(
            total=c.steps,
            initial=self.step,
            desc=f"{c.name} ({c.objective}{sharding})",
            dynamic_ncols=True,
            disable=not distributed.is_main(),
        )
        try:
            while self.step < c.steps:
                start = time.perf_counter()
                sums: dict[str, float] = {}
                for k in range(c.grad_accum):
                    with self._autocast():
                        terms = self._loss(self.step * c.grad_accum + k)
                    (terms["loss"] / c.grad_accum).backward()
                    for name, value in terms.items():
                        sums[name] = sums.get(name, 0.0) + value.item() / c.grad_accum
                distributed.average_gradients(self.params)
                distributed.clip_grad_norm(self.params, c.max_grad_norm)
                self.optimizer.step()
                state_mib = self._state_bytes() / 2**20
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                losses = {name: distributed.mean(value) for name, value in sums.items()}
                seconds = time.perf_counter() - start
                rate = c.batch_size * c.grad_accum * self.world / seconds
                lr = self.scheduler.get_last_lr()[0]
                bar.update()
                shown = {name.removesuffix("_loss"): f"{value:.4f}" for name, value in losses.items()}
                bar.set_postfix(**shown, lr=f"{lr:.2e}", ex_s=f"{rate:.1f}")
                if log_file is not None and (self.step % c.log_every == 0 or self.step == c.steps):
                    log_file.write(
                        json.dumps(
                            {
                                "step": self.step,
                                **losses,
                                "lr": lr,
                                "examples_per_s": rate,
                                "seconds": seconds,
                                "state_mib": state_mib,
                            }
                        )
                        + "\n"
                    )
                    log_file.flush()
                if distributed.mean(float(self._stop_signal is not None)) > 0:  # any process signalled
                    self._checkpoint()
                    raise TrainingInterrupted(
                        f"stopped by signal {self._stop_signal} at step {self.step}/{c.steps}; "
                        f"checkpoint in {self.dir / CHECKPOINT}: rerun with --resume"
                    )
                if self.step % c.checkpoint_every == 0 and self.step < c.steps:
                    self._checkpoint()
        finally:
            bar.close()
            if log_file is not None:
                log_file.close()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            set_dropout(model, 0.0)
            for hook in hooks:
                hook.remove()
            model.eval()
        self._finish()

    def _state_bytes(self) -> int:
        """This process's share of weights, gradients and optimizer state (FSDP shrinks all three)."""
        params = list(self.encoder.model.parameters()) + self.params  # latent pooling is outside the model
        tensors = [*dict.fromkeys(params), *(p.grad for p in self.params if p.grad is not None)]
        tensors += [v for moments in self.optimizer.state.values() for v in moments.values()]
        return sum(distributed.local_nbytes(t) for t in tensors)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._stop_signal is not None:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self._stop_signal = signum
        log.warning("signal %d: finishing this step, then writing a checkpoint", signum)

    def _state(self, rng_states: list[torch.Tensor]) -> dict[str, Any]:
        """What a checkpoint holds; FSDP shards are gathered whole, so the file is as without FSDP."""
        full = distributed.full_tensor
        trainable = {
            n: full(p.detach()).clone()
            for n, p in self._trainable_modules().named_parameters()
            if p.requires_grad
        }
        optimizer = self.optimizer.state_dict()
        optimizer["state"] = {i: {k: full(v) for k, v in s.items()} for i, s in optimizer["state"].items()}
        return {
            "step": self.step,
            "config": asdict(self.config),
            "trainable": trainable,
            "latent": self.encoder.latent.state_dict() if self.encoder.latent is not None else None,
            "optimizer": optimizer,
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": rng_states,  # one per process
            "generator": self.generator.get_state(),
        }

    def _checkpoint(self) -> None:
        rng_states = distributed.gather_objects(torch.get_rng_state())  # every process takes part
        # Only the main process builds and writes the state, unless gathering FSDP shards needs them all.
        state = self._state(rng_states) if self.sharded or distributed.is_main() else None
        if distributed.is_main():
            tmp = self.dir / f"{CHECKPOINT}.tmp"
            torch.save(state, tmp)
            os.replace(tmp, self.dir / CHECKPOINT)  # atomic: a crash mid-write keeps the previous one
        distributed.barrier()

    def _restore(self) -> None:
        try:  # tensors and plain containers only: a checkpoint planted in a shared --out cannot run code
            state = torch.load(self.dir / CHECKPOINT, weights_only=True)
        except pickle.UnpicklingError as err:
            raise ValueError(
                f"{self.dir / CHECKPOINT} holds more than tensors and plain values, so dec2vec did not write "
                f"it: refusing to load it ({err}); remove it to restart the stage"
            ) from err
        saved = {k: v for k, v in state["config"].items() if k not in ("checkpoint_every", "log_every")}
        current = {k: v for k, v in asdict(self.config).items() if k not in ("checkpoint_every", "log_every")}
        if saved != current:
            raise ValueError(
                f"{self.dir / CHECKPOINT} was written by a different stage config; remove it to restart"
            )
        params = dict(self._trainable_modules().named_parameters())
        with torch.no_grad():
            for name, value in state["trainable"].items():
                params[name].copy_(distributed.shard_like(value, params[name]))
        if state["latent"] is not None:
            self.encoder.latent.load_state_dict(state["latent"])
        self.optimizer.load_state_dict(state["optimizer"])
        for param, moments in self.optimizer.state.items():
            for key, value in moments.items():
                moments[key] = distributed.shard_like(value, param)
        self.scheduler.load_state_dict(state["scheduler"])
        if len(state["torch_rng"]) != self.world:
            raise ValueError(
                f"{self.dir / CHECKPOINT} was written by {len(state['torch_rng'])} processes; "
                f"resume it with as many (this run has {self.world})"
            )
        torch.set_rng_state(state["torch_rng"][self.rank])
        self.generator.set_state(state["generator"])
        self.step = state["step"]
        # Steps logged after this checkpoint (before the crash) will be run again: drop them from the log.
        log_path = self.dir / "log.jsonl"
        if log_path.exists() and distributed.is_main():
            kept = [r for r in log_path.read_text().splitlines() if r and json.loads(r)["step"] <= self.step]
            log_path.write_text("".join(r + "\n" for r in kept))
        log.warning("resumed %s at step %d/%d", self.config.name, self.step, self.config.steps)

    def _finish(self) -> None:
        if self.config.gradient_checkpointing:
            model = self.encoder.model
            getattr(model, "activation_checkpointing_disable", model.gradient_checkpointing_disable)()
        if self.sharded:
            self._unshard()
        if self.peft is not None:
            self.encoder.model = self.peft.merge_and_unload()
        if distributed.is_main():
            self._plot_loss()

    def _unshard(self) -> None:
        """Every process gets the whole trained model back, to merge, save and use like an unsharded one."""
        if self.peft is None:
            self.encoder.model = distributed.unsharded(self.encoder.model, self.encoder.model, lambda m: m)
            return
        lora = self.peft.peft_config["default"]
        self.peft = distributed.unsharded(self.peft, self.encoder.model, lambda m: get_peft_model(m, lora))

    def _plot_loss(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = [json.loads(line) for line in (self.dir / "log.jsonl").read_text().splitlines() if line]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for name in ("loss", "rep_loss", "gen_loss"):  # GRIT plots its two terms beside their sum
            if name in rows[0]:
                ax.plot([r["step"] for r in rows], [r[name] for r in rows], label=name.replace("_", " "))
        if "rep_loss" in rows[0]:
            ax.legend()
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(f"{self.config.name} ({self.config.objective})")
        fig.tight_layout()
        fig.savefig(self.dir / "loss.png", dpi=100)
        plt.close(fig)


@dataclass(frozen=True)
class ObjectiveSpec:
    """What an objective trains on ("text", "pairs" or "any"), its loss terms for one batch, and what else
    a stage of it must have."""

    data: Literal["text", "pairs", "any"]
    terms: Callable[[StageTrainer, list, str], dict[str, torch.Tensor]]
    description: str
    needs_generation_data: bool = False
    needs_teacher: bool = False  # and only it may have one
    masks_tokens: bool = False  # resolves a mask token at start


# A new objective is one entry: its data kind and a StageTrainer method returning named loss terms.
OBJECTIVES: dict[str, ObjectiveSpec] = {
    "mntp": ObjectiveSpec(
        "text", StageTrainer._mntp, "masked next-token prediction, bidirectional", masks_tokens=True
    ),
    "simcse": ObjectiveSpec("text", StageTrainer._simcse, "unsupervised SimCSE: two dropout views"),
    "supervised": ObjectiveSpec("pairs", StageTrainer._contrastive, "InfoNCE, in-batch + hard negatives"),
    "grit": ObjectiveSpec(
        "pairs", StageTrainer._contrastive, "InfoNCE + next-token loss (GRIT)", needs_generation_data=True
    ),
    "distill": ObjectiveSpec(
        "any", StageTrainer._distill, "the teacher's in-batch similarity structure", needs_teacher=True
    ),
}
