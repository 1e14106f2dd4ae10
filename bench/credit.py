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
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time

from negrl_sampler.credit import ROUNDS, STRATEGIES, search_pit
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--negatives", type=int, default=3000)
    parser.add_argument("--rollouts", type=int, default=5, help="K")
    parser.add_argument("--estimate", choices=["best_of_k", "soft"], default="best_of_k")
    parser.add_argument("--recovery-rate", type=float, default=0.3,
                        help="share of post-pit prefixes with a small chance of recovering")
    parser.add_argument("--step-accuracy", type=float, nargs=2, default=(0.8, 0.98),
                        help="range of the per-question probability of getting a step right")
    parser.add_argument("--rounds", choices=ROUNDS, default="single")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
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
