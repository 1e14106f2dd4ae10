"""Pit-search strategies on a simulated policy: generated tokens and rollouts per negative, and how
often each strategy finds the same first pit as `full`.

Negatives look like GSM8K responses: L = 3-10 steps of 15-45 tokens. The policy gets each step of
a question right with probability s (per question, uniform in 0.8-0.98), so a prefix of i correct
steps succeeds with probability s^(L-i) (the question's solve rate s^L is ~0.15-0.95). The first
wrong step c (uniform over the steps) is the true pit: from c on the value is 0, except that 30% of
those prefixes keep a small chance (0-5%) to recover (self-correction: values are then not
monotone). A rollout after i steps generates the rest of the response's length. Rollouts are
seeded like the real stage (completion j of prefix i is the same outcome whichever request draws
it), so every strategy sees the same world and full's own Best-of-K noise is part of it.

Target: early_stop or bisect spends >= 3x fewer generated tokens than full, with the same pit on
>= 95% of negatives. Last line: name=value pairs.

`--replay WORKDIR` measures the same two figures on a finished `negrl run` instead: a sample of the
negatives its credit stage scanned (`--credit-stage`, default `credit` or `credit-s0`) is searched
again with `full` and with the run's strategy by the real credit code, against a transformers
server of the run's own pi_sft (`artifacts/sft[-s<seed>]/model`). Both searches see the same
rollouts (the server seeds every completion), so the difference is the strategy alone.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path

from negrl_sampler.credit import ESTIMATES, ROUNDS, STRATEGIES, search_pit
from negrl_sampler.simulated_policy import ScriptedNegative


def simulated_negative(rng: random.Random, seed: int, recovery_rate: float,
                       step_accuracy: tuple[float, float]) -> ScriptedNegative:
    steps = rng.randint(3, 10)
    tokens = [rng.randint(15, 45) for _ in range(steps)]
    pit = rng.randint(1, steps)
    accuracy = rng.uniform(*step_accuracy)
    values = [
        accuracy ** (steps - step) if step < pit
        else (rng.uniform(0.0, 0.05) if rng.random() < recovery_rate else 0.0)
        for step in range(1, steps)
    ]
    return ScriptedNegative(values=values, step_tokens=tokens, seed=seed)


async def measure(negatives: list[ScriptedNegative], k: int, estimate: str, rounds: str) -> dict[str, dict]:
    results: dict[str, dict] = {}
    for strategy in STRATEGIES:
        searches = [await search_pit(strategy, n.num_steps, n.rollout, k=k, estimate=estimate, rounds=rounds)
                    for n in negatives]
        results[strategy] = {
            "pits": [s.pit for s in searches],
            "tokens": sum(s.tokens for s in searches),
            "rollouts": sum(s.rollouts for s in searches),
        }
    return results


def figures(results: dict[str, dict], negatives: list[ScriptedNegative]) -> dict[str, dict]:
    count = len(negatives)
    full = results["full"]
    table = {}
    for strategy, result in results.items():
        table[strategy] = {
            "tokens_per_negative": result["tokens"] / count,
            "rollouts_per_negative": result["rollouts"] / count,
            "token_reduction": full["tokens"] / result["tokens"],
            "pit_agreement": sum(a == b for a, b in zip(result["pits"], full["pits"], strict=True)) / count,
            "true_pit_agreement": sum(p == n.true_pit() for p, n in zip(result["pits"], negatives, strict=True))
            / count,
        }
    return table


def replay(workdir: Path, stage: str | None, sample: int, seed: int) -> int:
    """Replay a run's real negatives with `full` and the run's strategy; prints the figures."""
    from negrl_operator.api.artifact import read_records
    from negrl_operator.api.stage_config import CreditStageConfig, ServerRef, load_stage_config
    from negrl_sampler.grading.grader import Grader
    from negrl_sampler.pairing import by_question
    from negrl_sampler.record import Sample
    from negrl_sampler.serving.client import CompletionClient
    from negrl_sampler.serving.transformers_server import TransformersServer
    from negrl_sampler.stages.credit import credit_negative, references
    from negrl_sampler.stages.metrics import RolloutMetrics
    from negrl_sampler.stages.rollout import AsyncGrader

    stage = stage or next(name for name in ("credit", "credit-s0") if (workdir / "artifacts" / name).is_dir())
    config = load_stage_config(workdir / "configs" / f"{stage}.json", CreditStageConfig)
    scanned = [(r["question_id"], r["sample_index"]) for r in read_records(workdir / "artifacts" / stage)]
    chosen = sorted(random.Random(seed).sample(scanned, min(sample, len(scanned))))
    groups = by_question(Sample.model_validate(record) for record in read_records(config.samples_dir))
    answers = references(config.samples_dir)
    model = workdir / "artifacts" / ("sft" + stage.removeprefix("credit")) / "model"
    strategy = config.params.strategy
    started = time.perf_counter()
    with TransformersServer(model) as server:
        ref = ServerRef(base_url=server.base_url, model=server.model, max_concurrency=32)
        metrics = RolloutMetrics("bench-credit")
        grader = AsyncGrader(Grader(workers=1), metrics)

        async def search(name: str) -> list:
            run_config = config.model_copy(update={"server": ref, "params": config.params.model_copy(
                update={"strategy": name})})
            by_key = {(q, i): next(s for s in groups[q] if s.sample_index == i) for q, i in chosen}
            async with CompletionClient.for_server(ref) as client:
                return list(await asyncio.gather(*(
                    credit_negative(run_config, client, grader, by_key[key], groups[key[0]], answers[key[0]])
                    for key in chosen)))

        full = asyncio.run(search("full"))
        other = asyncio.run(search(strategy))
    tokens = (sum(r.generated_tokens for r in full), sum(r.generated_tokens for r in other))
    agreement = sum(a.pit == b.pit for a, b in zip(full, other, strict=True)) / len(chosen)
    print(f"replay of {len(chosen)} real negatives of {workdir / 'artifacts' / stage} against {model}, "
          f"K={config.params.rollouts}, {config.params.estimate}, {time.perf_counter() - started:.1f}s")
    print(f"full: {tokens[0] / len(chosen):.1f} tokens/neg, {sum(r.rollouts for r in full) / len(chosen):.2f} "
          f"rollouts/neg; {strategy}: {tokens[1] / len(chosen):.1f} tokens/neg, "
          f"{sum(r.rollouts for r in other) / len(chosen):.2f} rollouts/neg")
    print(f"strategy={strategy} negatives={len(chosen)} token_reduction={tokens[0] / max(tokens[1], 1):.2f} "
          f"pit_agreement={agreement:.4f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replay", type=Path, help="a `negrl run` workdir: replay its real negatives")
    parser.add_argument("--credit-stage", help="the credit stage to replay (default credit or credit-s0)")
    parser.add_argument("--sample", type=int, default=100, help="negatives replayed")
    parser.add_argument("--negatives", type=int, default=3000)
    parser.add_argument("--rollouts", type=int, default=5, help="K")
    parser.add_argument("--estimate", choices=ESTIMATES, default="best_of_k")
    parser.add_argument("--recovery-rate", type=float, default=0.3,
                        help="share of post-pit prefixes with a small chance of recovering")
    parser.add_argument("--step-accuracy", type=float, nargs=2, default=(0.8, 0.98),
                        help="range of the per-question probability of getting a step right")
    parser.add_argument("--rounds", choices=ROUNDS, default="single")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.replay:
        return replay(args.replay, args.credit_stage, args.sample, args.seed)
    rng = random.Random(args.seed)
    negatives = [simulated_negative(rng, seed, args.recovery_rate, tuple(args.step_accuracy))
                 for seed in range(args.negatives)]
    started = time.perf_counter()
    results = asyncio.run(measure(negatives, args.rollouts, args.estimate, args.rounds))
    table = figures(results, negatives)
    mean_steps = sum(n.num_steps for n in negatives) / len(negatives)
    print(f"{len(negatives)} negatives, {mean_steps:.1f} steps on average, K={args.rollouts}, "
          f"{args.estimate}, rounds={args.rounds}, {time.perf_counter() - started:.1f}s")
    print(f"{'strategy':<11} {'tokens/neg':>11} {'rollouts/neg':>13} {'reduction':>10} {'pit=full':>9} {'pit=true':>9}")
    for strategy, row in table.items():
        print(f"{strategy:<11} {row['tokens_per_negative']:>11.0f} {row['rollouts_per_negative']:>13.1f} "
              f"{row['token_reduction']:>9.2f}x {row['pit_agreement']:>9.3f} {row['true_pit_agreement']:>9.3f}")
    candidates = [s for s in ("early_stop", "bisect") if table[s]["pit_agreement"] >= 0.95] or ["early_stop", "bisect"]
    best = max(candidates, key=lambda s: table[s]["token_reduction"])
    row = table[best]
    met = row["token_reduction"] >= 3 and row["pit_agreement"] >= 0.95
    print(f"best: {best} (target >= 3x fewer tokens with >= 95% same pit) {'ok' if met else 'MISSED'}")
    pairs = {
        "best": best, "token_reduction": round(row["token_reduction"], 2),
        "pit_agreement": round(row["pit_agreement"], 4),
        "early_stop_token_reduction": round(table["early_stop"]["token_reduction"], 2),
        "bisect_token_reduction": round(table["bisect"]["token_reduction"], 2),
        "bisect_pit_agreement": round(table["bisect"]["pit_agreement"], 4),
        "full_tokens_per_negative": round(table["full"]["tokens_per_negative"], 1),
        "full_rollouts_per_negative": round(table["full"]["rollouts_per_negative"], 2),
        "early_stop_rollouts_per_negative": round(table["early_stop"]["rollouts_per_negative"], 2),
        "bisect_rollouts_per_negative": round(table["bisect"]["rollouts_per_negative"], 2),
    }
    print(" ".join(f"{name}={value}" for name, value in pairs.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
