"""Which K (rollouts per prefix) puts Best-of-K first pits on the true first consequential error of the
arithmetic task? A validation-side probe for choosing `stages.credit.params.rollouts` (issue 20).

For a sample of a policy's wrong answers (negatives) it draws R rollouts from every step prefix (one
solution line per step, as the example's credit stage splits them) at the sampling temperature, so
each prefix's solve rate q_i is known to within a few points. Best-of-K with K <= R is then replayed
many times on subsets of those rollouts: the first prefix with no correct rollout among K is the
first pit (the full response if none), scored against the task's line checker. Printed per K: pit
precision (pit on the true line), false pits (before it: a solvable prefix whose K rollouts all
failed) and late pits (after it: a prefix past the mistake that some rollout still solved), and q just
before and just after the true line, which bound every K: precision cannot beat the share of
negatives whose prefix past the mistake never recovers; and how the right rollouts from those prefixes
came back (`negrl_sampler.arithmetic_check.recovery`): `repair`, a later line writes a count its own
working does not give, or `cancel`, the working holds throughout and a second mistake undid the first.

Negatives come either from a finished `negrl run` (`--workdir`: its credit stage's scanned negatives
and its pi_sft) or from a model and generated training questions (`--model` with the task's knobs:
4 samples per question, the wrong ones). Never the test split. Last line: `K=<k> precision=<p> ...`
for the smallest K that reaches 0.8, else for the most precise.

  python bench/credit_k.py --workdir RUN --negatives 300 --rollouts 32
  python bench/credit_k.py --model DIR --max-value 20 --lexicon 4096 --questions 500
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections import Counter
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from negrl_operator.api.stage_config import StepSplitSpec
from negrl_sampler.arithmetic import arithmetic_questions, event_steps, parse_problem
from negrl_sampler.arithmetic_check import check_response, recovery
from negrl_sampler.credit import ESTIMATES, least_advantage_step, step_value
from negrl_sampler.grading.answer import extract_arithmetic
from negrl_sampler.step import split_steps

PROMPT = "{question}\nAnswer:"
LINES = StepSplitSpec(delimiter="line", min_chars=0, max_steps=16)


@torch.no_grad()
def complete(model, tokenizer, prompts: list[str], count: int, temperature: float, batch: int = 512) -> list[list[str]]:
    """`count` sampled completions of each prompt."""
    tokenizer.padding_side = "left"
    out: list[list[str]] = []
    per_call = max(1, batch // count)
    for start in range(0, len(prompts), per_call):
        encoded = tokenizer(prompts[start:start + per_call], add_special_tokens=False, padding=True,
                            return_tensors="pt")
        ids = model.generate(**encoded, do_sample=True, temperature=temperature, top_p=1.0, top_k=0,
                             max_new_tokens=64, num_return_sequences=count, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id)
        texts = tokenizer.batch_decode(ids[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
        out += [texts[i * count:(i + 1) * count] for i in range(len(texts) // count)]
    return out


def run_negatives(workdir: Path, count: int, seed: int) -> list[tuple[str, list[str]]]:
    """(prompt, steps) of negatives the run's credit stage scanned and could solve (Q_0 > 0)."""
    records = [json.loads(line) for path in sorted((workdir / "artifacts" / "credit").glob("records-*.jsonl"))
               for line in path.read_text().splitlines()]
    solvable = [(r["prompt"], r["steps"]) for r in records if r["values"] and r["values"][0]["successes"]]
    return random.Random(seed).sample(solvable, min(count, len(solvable)))


def model_negatives(model, tokenizer, args) -> list[tuple[str, list[str]]]:
    """Up to 2 wrong answers per training question the model solves at least once in 4 samples."""
    knobs = dict(quantities=args.quantities, chain_length=args.chain_length, max_value=args.max_value,
                 interact=args.interact, lexicon=args.lexicon, seed=0)
    questions = list(arithmetic_questions(args.questions, "train", prefix="t", **knobs))
    prompts = [PROMPT.format(question=q["question"]) for q in questions]
    negatives, mixed = [], 0
    for prompt, samples in zip(prompts, complete(model, tokenizer, prompts, 4, args.temperature), strict=True):
        truth = answer_of(prompt)
        right = [extract_arithmetic(s) == str(truth) for s in samples]
        mixed += any(right) and not all(right)
        if any(right):
            negatives += [(prompt, split_steps(s, LINES)) for s, ok in zip(samples, right, strict=True) if not ok][:2]
    print(f"questions with a right and a wrong answer in 4 samples at T={args.temperature}: "
          f"{mixed / len(prompts):.3f} of {len(prompts)}")
    return random.Random(args.seed).sample(negatives, min(args.negatives, len(negatives)))


def answer_of(prompt: str) -> int:
    problem = parse_problem(prompt.removesuffix("\nAnswer:"))
    return event_steps(problem)[1][problem.asked]


def solve_rates(model, tokenizer, negatives, rollouts: int, temperature: float, true_lines: list[int]):
    """For each negative, each prefix 0..L-1: which of the R rollouts end in the right answer; and how
    each right rollout from a prefix past the true line came back (`recovery`: cancel or repair)."""
    jobs = [(index, step) for index, (_, steps) in enumerate(negatives) for step in range(len(steps))]
    prompts = [negatives[i][0] + "".join(negatives[i][1][:step]) for i, step in jobs]
    completions = complete(model, tokenizer, prompts, rollouts, temperature)
    outcomes: list[list[list[bool]]] = [[] for _ in negatives]
    problems = [parse_problem(prompt.removesuffix("\nAnswer:")) for prompt, _ in negatives]
    recoveries: Counter = Counter()
    for (index, step), texts in zip(jobs, completions, strict=True):
        prompt, steps = negatives[index]
        truth, prefix = str(answer_of(prompt)), "".join(steps[:step])
        outcomes[index].append([extract_arithmetic(prefix + text) == truth for text in texts])
        if step >= true_lines[index]:
            recoveries.update(recovery(problems[index], prefix + text) for text, right in
                              zip(texts, outcomes[index][-1], strict=True) if right)
    return outcomes, recoveries


def first_pit(outcomes: list[list[bool]], k: int, rng: random.Random, estimate: str) -> int:
    """The credit stage's first pit on a K-subset of each prefix's rollouts (prefix 0's among them are
    Q_0's): the first prefix with no success (`best_of_k`), else the step of least advantage."""
    if estimate == "best_of_k":
        return next((step for step in range(1, len(outcomes)) if not any(rng.sample(outcomes[step], k))),
                    len(outcomes))
    values = [step_value(sum(rng.sample(prefix, k)), k, k, estimate) for prefix in outcomes]
    return least_advantage_step([*values, 0.0])


def row_text(row: dict) -> str:
    return " ".join(f"{name}={value:.3f}" if isinstance(value, float) else f"{name}={value}"
                    for name, value in row.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--workdir", type=Path), add("--model", type=Path)
    add("--quantities", type=int, default=1), add("--chain-length", type=int, default=4)
    add("--max-value", type=int, default=20), add("--interact", type=float, default=0.0)
    add("--lexicon", type=int, default=0), add("--questions", type=int, default=500)
    add("--negatives", type=int, default=300), add("--rollouts", type=int, default=32, help="R")
    add("--ks", type=int, nargs="+", default=[1, 2, 3, 5, 8, 12, 16])
    add("--estimates", nargs="+", choices=ESTIMATES, default=["best_of_k"], help="stages.credit.params.estimate")
    add("--temperature", type=float, default=0.7, help="sampling the negatives (and rollouts, by default)")
    add("--rollout-temperature", type=float), add("--seed", type=int, default=0)
    add("--threads", type=int, default=2), add("--dump", type=Path, help="write each negative's rollouts here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    folder = args.workdir / "artifacts" / "sft" / "model" if args.workdir else args.model
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder).eval()
    started = time.monotonic()
    negatives = (run_negatives(args.workdir, args.negatives, args.seed) if args.workdir
                 else model_negatives(model, tokenizer, args))
    truths = [check_response(parse_problem(p.removesuffix("\nAnswer:")), "".join(s)).first_consequential_error
              for p, s in negatives]
    kept = [(n, t) for n, t in zip(negatives, truths, strict=True) if t is not None]
    rollout_temperature = args.temperature if args.rollout_temperature is None else args.rollout_temperature
    outcomes, recoveries = solve_rates(model, tokenizer, [n for n, _ in kept], args.rollouts, rollout_temperature,
                                       [t for _, t in kept])
    if args.dump:
        args.dump.write_text(json.dumps([{"prompt": p, "steps": s, "true_line": t, "outcomes": o}
                                         for ((p, s), t), o in zip(kept, outcomes, strict=True)]))
    print(f"{len(kept)} negatives with a true error, {args.rollouts} rollouts per prefix, "
          f"T={args.temperature}, rollouts T={rollout_temperature}, {time.monotonic() - started:.0f}s")
    rate = [(sum(o[t - 1]) / len(o[t - 1]), sum(o[t]) / len(o[t]) if t < len(o) else 0.0)
            for o, (_, t) in zip(outcomes, kept, strict=True)]
    print(f"q before the true line: mean {statistics.mean(r[0] for r in rate):.3f}; after it: mean "
          f"{statistics.mean(r[1] for r in rate):.3f}, never recovers in {args.rollouts}: "
          f"{sum(r[1] == 0 for r in rate) / len(rate):.3f}")
    print(f"right rollouts from prefixes past the true line: {sum(recoveries.values())}; {recoveries['repair']} "
          f"repair (a later line writes a count its own working does not give), {recoveries['cancel']} cancel "
          "(the working holds: a second mistake undid the first)")
    rng, rows = random.Random(args.seed), []
    for estimate, k in [(e, k) for e in args.estimates for k in args.ks if k <= args.rollouts]:
        pits = [(first_pit(o, k, rng, estimate), t) for _ in range(20)
                for o, (_, t) in zip(outcomes, kept, strict=True)]
        row = {"estimate": estimate, "K": k, "precision": sum(p == t for p, t in pits) / len(pits),
               "false": sum(p < t for p, t in pits) / len(pits), "late": sum(p > t for p, t in pits) / len(pits)}
        rows.append(row)
        print(row_text(row))
    chosen = next((row for row in rows if row["precision"] >= 0.8), max(rows, key=lambda row: row["precision"]))
    print(row_text(chosen))


if __name__ == "__main__":
    main()
