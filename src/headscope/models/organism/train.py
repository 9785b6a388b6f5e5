"""Train the model organism: a small GPT-2 on the built-in tasks plus repeated random sequences.

Run `python -m headscope.models.organism.train [--out DIR] [--steps N] [--seed S] [--threads T]`;
`--save-every N --checkpoints DIR` also saves the model at steps 0, N, 2N, ... and the last, each
a Hugging Face directory `DIR/step-NNNNN` (for `headscope sweep` over its own training).
Every batch is drawn from the built-in task generators with seeds from
`TrainConfig.data_seed` upward (evaluation uses seeds 0..99), so no training prompt
comes from an evaluation seed. The loss is taken only where a task has an answer: the
final position of a task prompt, and every predictable token of a repeated sequence.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm import tqdm
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from headscope.files import write_folder_atomic
from headscope.models.organism.tokenizer import word_level_tokenizer
from headscope.tasks.builtin import builtin_tasks, induction_pool
from headscope.tasks.vocabulary import task_vocabulary

WEIGHTS_DIR = Path(__file__).parent / "weights"
IGNORE = -100  # cross-entropy ignores these targets
SEQUENCE_TASKS = ("seq-digits", "seq-numwords", "seq-months", "seq-days")


@dataclass(frozen=True)
class TrainConfig:
    """Architecture, batch mixture and optimiser of one training run."""

    n_layer: int = 4
    n_head: int = 2
    n_embd: int = 192
    n_inner: int = 768
    # Layer 0 is an MLP-only layer (its heads are zero and frozen), layers 1-3 attention-only:
    # with heads in layer 0, they moved x4 to `end` and MLP0 computed the successor there, so
    # no head carried the map. 2 heads of 96: 3 heads of 64 spread the map over six heads.
    mlp_layers: tuple[int, ...] = (0,)  # the MLPs of other layers are zero and frozen
    attention_layers: tuple[int, ...] = (1, 2, 3)  # the heads of other layers are zero and frozen
    n_positions: int = 128
    mixture: tuple[tuple[str, int], ...] = (
        ("ioi", 32),
        ("recency", 8),
        ("seq-digits", 6),
        ("seq-numwords", 6),
        ("seq-months", 6),
        ("seq-days", 6),
    )
    # The sequence loss does not train MLP0 (gradient stopped at its output on those rows):
    # when it did, MLP0 wrote each member's successor into the token's residual, and every
    # head that moved x4 looked like a successor head (next 0.5-0.9 in three heads).
    mlp_blind_tasks: tuple[str, ...] = SEQUENCE_TASKS
    # Sequence prompts per step whose x1..x4 are random members (see scrambled_examples):
    # without them the clean runs were solved without a successor map in any head.
    scrambled: tuple[tuple[str, int], ...] = tuple((task, 6) for task in SEQUENCE_TASKS)
    repeats: int = 16  # repeated random sequences per step
    repeat_lengths: tuple[int, int] = (4, 10)
    steps: int = 2400
    lr: float = 1.5e-3
    weight_decay: float = 0.01
    warmup: int = 100
    seed: int = 0
    data_seed: int = 10_000
    threads: int = 1  # the shipped weights were trained with 1; another count rounds differently


@dataclass(frozen=True)
class Checkpoints:
    """Save the model under `folder` as `step-NNNNN` (the optimiser steps taken) every `every`
    steps: at step 0 (the initial weights), every, 2 * every, ... and after the last step."""

    folder: Path
    every: int

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"save every {self.every} steps: give 1 or more")

    def due(self, step: int, last: int) -> bool:
        return step % self.every == 0 or step == last

    def path(self, step: int) -> Path:
        return self.folder / f"step-{step:05d}"


class _NoMLP(torch.nn.Module):
    """Stands in for a zeroed MLP while training: its output is exactly zero, at no cost."""

    def forward(self, hidden: Tensor) -> Tensor:
        return torch.zeros_like(hidden)


class _NoAttention(torch.nn.Module):
    """Stands in for zeroed heads while training: the output (zero projection) is zero."""

    def forward(self, hidden: Tensor, *args, **kwargs) -> tuple[Tensor, None]:
        return torch.zeros_like(hidden), None


def build_model(config: TrainConfig, vocab_size: int) -> GPT2LMHeadModel:
    """A fresh GPT-2 with no dropout; MLPs outside `mlp_layers` zeroed and frozen."""
    gpt2 = GPT2Config(
        vocab_size=vocab_size,
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_inner=config.n_inner,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(config.seed)
    model = GPT2LMHeadModel(gpt2)
    for layer, block in enumerate(model.transformer.h):
        switched_off = ([] if layer in config.mlp_layers else [block.mlp]) + (
            [] if layer in config.attention_layers else [block.attn]
        )
        for part in switched_off:
            for param in part.parameters():
                param.data.zero_()
                param.requires_grad_(False)
    return model


def _encode(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    return [tokenizer.bos_token_id, *tokenizer.encode(text, add_special_tokens=False)]


def _answered(tokenizer: PreTrainedTokenizerFast, text: str, answer: str) -> tuple[list[int], list[int]]:
    """(tokens, targets) of one prompt: the answer is the target at the final position only."""
    ids = _encode(tokenizer, text)
    return ids, [IGNORE] * (len(ids) - 1) + [tokenizer.convert_tokens_to_ids(answer)]


def task_examples(tokenizer, task_name: str, n: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """(tokens, targets) per clean prompt of the task."""
    pairs = builtin_tasks()[task_name].generate(n, seed)
    return [_answered(tokenizer, pair.clean.text, pair.clean.answer) for pair in pairs]


def repeat_examples(
    pool: list[int], n: int, lengths: tuple[int, int], rng: random.Random
) -> list[tuple[list[int], list[int]]]:
    """A random sequence of distinct words, then its repeat; targets on the repeat."""
    examples = []
    for _ in range(n):
        length = rng.randint(*lengths)
        seq = rng.sample(pool, length)
        ids = [0, *seq, *seq]
        # position p predicts ids[p + 1]; from the first repeated token on, it is known
        targets = [IGNORE] * (length + 1) + seq[1:] + [IGNORE]
        examples.append((ids, targets))
    return examples


def collate(
    examples: list[tuple[list[int], list[int]]],
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Right-pad tokens with 0 and targets with IGNORE."""
    width = max(len(ids) for ids, _ in examples)
    tokens = torch.tensor([ids + [0] * (width - len(ids)) for ids, _ in examples])
    targets = torch.tensor([t + [IGNORE] * (width - len(t)) for _, t in examples])
    return tokens, targets


def scrambled_examples(tokenizer, task_name: str, n: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """Sequence prompts whose x1..x4 are random members (the task's corrupted twin), answered
    by the member after x4: only x4 tells the answer, so it has to be moved and mapped."""
    task = builtin_tasks()[task_name]
    (family,) = task.families
    examples = []
    for pair in task.generate(n, seed):
        answer = family.successor(pair.corrupted.fillers()["x4"])
        if answer is None:  # x4 is the last member of a family that does not wrap
            continue
        examples.append(_answered(tokenizer, pair.corrupted.text, answer))
    return examples


def step_batch(config: TrainConfig, tokenizer, pool: list[int], step: int):
    """Tokens, targets and MLP-blind rows of one step; the same for the same config and step."""
    parts = [(name, count, task_examples) for name, count in config.mixture]
    parts += [(name, count, scrambled_examples) for name, count in config.scrambled]
    first_seed = config.data_seed + step * (len(parts) + 1)
    examples, blind = [], []
    for index, (task_name, count, make) in enumerate(parts):
        made = make(tokenizer, task_name, count, first_seed + index)
        examples += made
        blind += [task_name in config.mlp_blind_tasks] * len(made)
    rng = random.Random(first_seed + len(parts))
    examples += repeat_examples(pool, config.repeats, config.repeat_lengths, rng)
    tokens, targets = collate(examples)
    return tokens, targets, torch.tensor(blind + [False] * config.repeats)


def _stop_gradient_hook(rows: list[Tensor]):
    """A forward hook that detaches an MLP's output on the rows flagged in `rows[0]` (set
    each step): the same values, but no gradient reaches the MLP from those prompts."""

    def hook(module, inputs, output: Float[Tensor, "batch pos d_model"]) -> Tensor:
        return torch.where(rows[0][:, None, None], output.detach(), output)

    return hook


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def loss_of(model: GPT2LMHeadModel, tokens: Tensor, targets: Tensor) -> Tensor:
    logits = model(tokens).logits  # [batch, pos, vocab]
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)


def train(config: TrainConfig, out: Path, checkpoints: Checkpoints | None = None) -> GPT2LMHeadModel:
    """Train from scratch and save a Hugging Face directory to `out` (and the `checkpoints`)."""
    torch.set_num_threads(config.threads)
    tokenizer = word_level_tokenizer(task_vocabulary())
    model = build_model(config, len(tokenizer))
    zeroed = _switch_off(model, config)
    blind_rows: list[Tensor] = []  # this step's MLP-blind rows, read by the hooks
    hooks = [
        model.transformer.h[layer].mlp.register_forward_hook(_stop_gradient_hook(blind_rows))
        for layer in config.mlp_layers
    ]

    def saver(step: int) -> None:
        if checkpoints is not None and checkpoints.due(step, config.steps):
            _save_checkpoint(model, zeroed, tokenizer, checkpoints.path(step))

    _optimise(model, config, tokenizer, blind_rows, saver)
    for handle in hooks:
        handle.remove()
    for block, name, module in zeroed:
        setattr(block, name, module)
    save(model, tokenizer, out)
    return model


def _save_checkpoint(model: GPT2LMHeadModel, zeroed: list, tokenizer, folder: Path) -> None:
    """The model as it is now, with its zeroed parts put back for the save (atomic folder)."""
    stand_ins = [(block, name, getattr(block, name)) for block, name, _ in zeroed]
    for block, name, module in zeroed:
        setattr(block, name, module)
    write_folder_atomic(folder, lambda tmp: save(model, tokenizer, tmp), "config.json")
    for block, name, module in stand_ins:
        setattr(block, name, module)


def _optimise(
    model: GPT2LMHeadModel,
    config: TrainConfig,
    tokenizer,
    blind_rows: list[Tensor],
    before_step=lambda step: None,
) -> None:
    """`config.steps` optimiser steps; `before_step(step)` is called before each and after the last."""
    pool = [tokenizer.convert_tokens_to_ids(word) for word in induction_pool()]
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    model.train()
    progress = tqdm(range(config.steps), desc="organism", unit="step")
    for step in progress:
        before_step(step)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        tokens, targets, blind = step_batch(config, tokenizer, pool, step)
        blind_rows[:] = [blind]
        loss = loss_of(model, tokens, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        if step % 10 == 0:
            progress.set_postfix(loss=f"{loss.item():.4f}")
    before_step(config.steps)
    model.eval()


def _switch_off(model: GPT2LMHeadModel, config: TrainConfig) -> list:
    """Replace the frozen zero MLPs and heads by stand-ins for speed; returns what to put back."""
    zeroed = []
    for layer, block in enumerate(model.transformer.h):
        if layer not in config.mlp_layers:
            zeroed.append((block, "mlp", block.mlp))
            block.mlp = _NoMLP()
        if layer not in config.attention_layers:
            zeroed.append((block, "attn", block.attn))
            block.attn = _NoAttention()
    return zeroed


def save(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the headscope model organism.")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="where to save the model")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument(
        "--threads",
        type=int,
        default=TrainConfig.threads,
        help="CPU threads (1 reproduces the shipped weights)",
    )
    parser.add_argument("--save-every", type=int, default=None, help="save a checkpoint every N steps")
    parser.add_argument("--checkpoints", type=Path, default=None, help="folder of the step-NNNNN checkpoints")
    args = parser.parse_args(argv)
    if (args.save_every is None) != (args.checkpoints is None):
        parser.error("--save-every and --checkpoints go together")
    saved = None if args.save_every is None else Checkpoints(args.checkpoints, args.save_every)
    config = replace(TrainConfig(), steps=args.steps, seed=args.seed, threads=args.threads)
    started = time.perf_counter()
    train(config, args.out, saved)
    print(f"saved to {args.out} after {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
