"""Does SFT on the arithmetic task measure data or circuit formation? A validation-only probe for
choosing the task's knobs, the scratch model and an optional pretrained base (issue 20) before the
example is fixed: it never reads the test split.

It builds the example's model (the word tokenizer of prepare, a tiny Llama), optionally pretrains it
on the task's disjoint `pretrain` bucket (chain lengths of its own), then trains SFT from that base on
nested prefixes of the train split (n, 2n, ...: the same epochs at every point, a floor on steps),
scores greedy answers on validation several times per point and keeps the best. For the best
checkpoint of each point it prints which part of the first wrong line went wrong (the target, its
count before the event, the operator, the operand, the result), from the task's line checker.

  python bench/arithmetic_regime.py --max-value 20 --quantities 3 --chain-length 4 \
      --pretrain 1,2:192000:1e-3 --sizes 500 1000 2000 4000 --epochs 3 --min-steps 200
Pretraining runs in phases (a curriculum), each one epoch over its own questions of the given chain
lengths: `--pretrain 1,2:288000:1e-3 1,2,3,4:80000:5e-4`; `--pretrain-max-value` draws them from a
smaller range than the task's (the numbers above it are then new to the base); `--save-base DIR` keeps
the base and `--base DIR` starts from a kept one instead of pretraining.
Last lines: `n=<size> best validation accuracy <acc> at step <step>`, one per point.

The loop is plain PyTorch on one process (no DeepSpeed, no stage start-up), so a probe costs minutes;
the example's own numbers come from `negrl run`.
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import time
from collections import Counter

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from negrl_sampler.arithmetic import arithmetic_questions, parse_problem, vocabulary
from negrl_sampler.arithmetic_check import check_response
from negrl_trainer.scratch_model import build_scratch_model

PROMPT = "{question}\nAnswer:"
LINE_PARTS = ("target", "=", "before", "op", "operand", "=", "result")


def encode(tokenizer, record: dict) -> tuple[list[int], list[int]]:
    prompt = tokenizer(PROMPT.format(question=record["question"]), add_special_tokens=False)["input_ids"]
    response = tokenizer(" " + record["solution"], add_special_tokens=False)["input_ids"]
    return prompt, [*response, tokenizer.eos_token_id]


def batches(tokenizer, records: list[dict], size: int, rng: random.Random):
    """Shuffled batches, loss on the response tokens only (the SFT stage's masking)."""
    order = list(range(len(records)))
    rng.shuffle(order)
    for start in range(0, max(1, len(order) - size + 1), size):
        pairs = [encode(tokenizer, records[i]) for i in order[start:start + size]]
        length = max(len(p) + len(r) for p, r in pairs)
        ids = torch.full((len(pairs), length), tokenizer.pad_token_id)
        labels = torch.full((len(pairs), length), -100)
        mask = torch.zeros((len(pairs), length), dtype=torch.long)
        for row, (prompt, response) in enumerate(pairs):
            ids[row, :len(prompt) + len(response)] = torch.tensor(prompt + response)
            mask[row, :len(prompt) + len(response)] = 1
            labels[row, len(prompt):len(prompt) + len(response)] = torch.tensor(response)
        yield ids, mask, labels


@torch.no_grad()
def score(model, tokenizer, records: list[dict]) -> tuple[float, Counter]:
    """Greedy accuracy, and what went wrong in each answer's first wrong event line."""
    model.eval()
    tokenizer.padding_side = "left"
    correct, anatomy = 0, Counter()
    for start in range(0, len(records), 64):
        chunk = records[start:start + 64]
        encoded = tokenizer([PROMPT.format(question=r["question"]) for r in chunk], add_special_tokens=False,
                            padding=True, return_tensors="pt")
        out = model.generate(**encoded, do_sample=False, max_new_tokens=64, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id)
        texts = tokenizer.batch_decode(out[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
        for record, text in zip(chunk, texts, strict=True):
            check = check_response(parse_problem(record["question"]), text)
            correct += check.answer_correct
            anatomy[first_wrong_parts(record["solution"], text, check.first_error)] += 1
    model.train()
    return correct / len(records), anatomy


def first_wrong_parts(reference: str, response: str, first_error: int | None) -> str:
    if first_error is None:
        return "none"
    wanted, got = reference.split("\n"), [line for line in response.split("\n") if line.strip()]
    index = first_error - 1
    if index >= len(wanted) - 1 or index >= len(got):
        return "answer line or missing"
    expected, written = wanted[index].split(), got[index].split()
    if len(expected) != len(written):
        return "line shape"
    return "+".join(part for part, a, b in zip(LINE_PARTS, expected, written, strict=True) if a != b and part != "=")


def train(model, tokenizer, records, *, epochs, min_steps, lr, batch, seed, validation, evaluations, label,
          train_check=0, keep=None):
    total = max(min_steps, math.ceil(epochs * max(1, len(records) // batch)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, total // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    rng, step, best, started = random.Random(seed), 0, (-1.0, 0, Counter()), time.monotonic()
    every = max(1, total // evaluations)
    while step < total:
        for ids, mask, labels in batches(tokenizer, records, batch, rng):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step(), schedule.step(), optimizer.zero_grad()
            step += 1
            if step % every == 0 or step == total:
                line = f"[{label}] step {step}/{total} loss {loss.item():.3f} {time.monotonic() - started:.0f}s"
                if validation:
                    accuracy, anatomy = score(model, tokenizer, validation)
                    if keep and accuracy > best[0]:  # the best checkpoint, for bench/credit_k.py
                        model.save_pretrained(keep), tokenizer.save_pretrained(keep)
                    best = max(best, (accuracy, step, anatomy), key=lambda b: b[0])
                    line += f" validation {accuracy:.3f}"
                    if train_check:  # the memorisation gate: its own training questions against held-out
                        line += f" train {score(model, tokenizer, records[:train_check])[0]:.3f}"
                print(line, flush=True)
            if step >= total:
                break
    return best


def pretrain_phase(text: str) -> tuple[list[int], int, float]:
    chains, questions, lr = text.split(":")
    return [int(chain) for chain in chains.split(",")], int(questions), float(lr)


def pretrain(base, tokenizer, args, validation):
    """Each phase one epoch over fresh questions of its chain lengths (the `pretrain` bucket), in order."""
    knobs = dict(quantities=args.quantities, max_value=args.pretrain_max_value or args.max_value,
                 interact=args.interact, lexicon=args.pretrain_lexicon, own_verbs=args.pretrain_own_verbs)
    for index, (chains, questions, lr) in enumerate(args.pretrain):
        family = [q for chain in chains for q in arithmetic_questions(
            questions // len(chains), "pretrain", chain_length=chain, prefix=f"p{chain}", seed=index, **knobs)]
        random.Random(args.seed + index).shuffle(family)
        train(base, tokenizer, family, epochs=1.0, min_steps=0, lr=lr, batch=args.pretrain_batch,
              seed=args.seed + index, validation=None, evaluations=args.evaluations, label=f"pretrain {index + 1}")
        accuracy, anatomy = score(base, tokenizer, validation)
        print(f"base after phase {index + 1}: validation {accuracy:.3f}; first wrong line: {anatomy.most_common(5)}")
    return base


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--quantities", type=int, default=3), add("--chain-length", type=int, default=4)
    add("--max-value", type=int, default=20), add("--interact", type=float, default=0.3)
    add("--lexicon", type=int, default=0, help="made-up verbs the questions may use (lexicon.py)")
    add("--pretrain-lexicon", type=int, default=0, help="the pretraining questions' lexicon")
    add("--pretrain-own-verbs", action="store_true", help="the pretraining lexicon is of its own (no task verb)")
    add("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 4000])
    add("--epochs", type=float, default=3.0), add("--min-steps", type=int, default=200)
    add("--pretrain", nargs="*", default=[], type=pretrain_phase, help="phases CHAINS:QUESTIONS:LR, in order")
    add("--pretrain-max-value", type=int, help="the pretraining questions' range (default: --max-value)")
    add("--base", help="a kept base (--save-base) to start from instead of pretraining"), add("--save-base")
    add("--hidden", type=int, default=128), add("--layers", type=int, default=4), add("--heads", type=int, default=2)
    add("--lr", type=float, default=1e-3), add("--batch", type=int, default=32)
    add("--pretrain-batch", type=int, default=32, help="the pretraining phases' batch (the example's microBatchSize)")
    add("--validation", type=int, default=300), add("--evaluations", type=int, default=5)
    add("--seed", type=int, default=0), add("--threads", type=int, default=1)
    add("--train-check", type=int, default=0, help="also score this many of each point's own training questions")
    add("--keep", help="save each point's best checkpoint under KEEP/n<size>")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    knobs = dict(quantities=args.quantities, max_value=args.max_value, interact=args.interact, seed=0,
                 lexicon=args.lexicon)
    train_set = list(arithmetic_questions(max(args.sizes), "train", chain_length=args.chain_length, prefix="t", **knobs))
    validation = list(arithmetic_questions(args.validation, "validation", chain_length=args.chain_length, prefix="v",
                                           **knobs))
    folder = tempfile.mkdtemp(prefix="arithmetic-regime-")
    own_lexicon = args.pretrain_lexicon if args.pretrain_own_verbs else 0
    build_scratch_model(folder, words=[*vocabulary(args.max_value, args.lexicon, own_lexicon), "Answer:"],
                        hidden=args.hidden, layers=args.layers, heads=args.heads, max_positions=256, seed=args.seed)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if args.base:
        folder = args.base
    elif args.pretrain:
        base = pretrain(AutoModelForCausalLM.from_pretrained(folder), tokenizer, args, validation)
        folder = args.save_base or f"{folder}/pretrained"
        base.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    for size in args.sizes:
        model = AutoModelForCausalLM.from_pretrained(folder)
        accuracy, step, anatomy = train(
            model, tokenizer, train_set[:size], epochs=args.epochs, min_steps=args.min_steps, lr=args.lr,
            batch=args.batch, seed=args.seed, validation=validation, evaluations=args.evaluations, label=f"n={size}",
            train_check=args.train_check, keep=args.keep and f"{args.keep}/n{size}")
        print(f"  first wrong line at the best step: {anatomy.most_common(5)}")
        print(f"n={size} best validation accuracy {accuracy:.3f} at step {step}", flush=True)


if __name__ == "__main__":
    main()
