"""Where does SFT on star graphs sit? A probe for choosing the star-graph example's regime (issue 14)
on the validation split only: trains the example's scratch Llama on n graphs with teacher forcing
(plain AdamW, loss on the answer tokens) and, every --every steps, decodes greedily on validation
graphs and on its own training graphs. It prints the regime gates' quantities as they evolve:
first-move accuracy (chance is 1/degree), accuracy given a correct first move (edge-following),
and train minus validation accuracy (memorisation). Minutes on CPU, so many (n, steps, size)
settings can be tried before a full `negrl run`.

  python bench/stargraph_regime.py --n 8000 --steps 3000 --every 500
Last line: n=... steps=... best_step=... first_move=... given_first=... validation=... train=... gap=...
(best_step: the first checkpoint passing edge-following and no-memorisation, else the last one).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from negrl_sampler.stargraph import PROMPT_TEMPLATE, render_path, render_question, star_graph  # noqa: E402
from negrl_trainer.scratch_model import build_scratch_model  # noqa: E402

FOLLOW_GATE, MEMORISATION_GAP = 0.9, 0.1  # the gates of operator/report/diagnostics.py


def graphs(count: int, args, seed: int) -> list:
    rng = random.Random(seed)
    return [star_graph(rng, args.degree, args.path_length, args.nodes) for _ in range(count)]


def encode(tokenizer, graph) -> tuple[list[int], int]:
    """(token ids, where the answer starts): <s> prompt answer </s>, as the trainer's SFT rows."""
    prompt = tokenizer(PROMPT_TEMPLATE.format(question=render_question(graph)), add_special_tokens=False)["input_ids"]
    answer = tokenizer(" " + render_path(graph.path), add_special_tokens=False)["input_ids"]
    ids = [tokenizer.bos_token_id, *prompt, *answer, tokenizer.eos_token_id]
    return ids, 1 + len(prompt)


def batch_loss(model, rows: list[tuple[list[int], int]], pad: int) -> torch.Tensor:
    width = max(len(ids) for ids, _ in rows)
    inputs = torch.full((len(rows), width), pad)
    labels = torch.full((len(rows), width), -100)
    for i, (ids, start) in enumerate(rows):
        inputs[i, :len(ids)] = torch.tensor(ids)
        labels[i, start:len(ids)] = torch.tensor(ids[start:])
    return model(input_ids=inputs, attention_mask=(inputs != pad).long(), labels=labels).loss


@torch.no_grad()
def accuracy(model, tokenizer, sample: list, path_length: int) -> dict:
    """Greedy decoding of the path's nodes (every prompt has the same length: no padding needed)."""
    model.eval()
    rows = [encode(tokenizer, graph) for graph in sample]
    ids = torch.tensor([row[:start] for row, start in rows])
    for _ in range(path_length):
        logits = model(input_ids=ids).logits[:, -1]
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    model.train()
    decoded = ids[:, -path_length:].tolist()
    truth = [row[start:start + path_length] for row, start in rows]
    first = [d[1] == t[1] for d, t in zip(decoded, truth, strict=True)]
    whole = [d == t for d, t in zip(decoded, truth, strict=True)]
    given = sum(w for w, f in zip(whole, first, strict=True) if f) / max(1, sum(first))
    return {"first_move": sum(first) / len(first), "given_first": given, "accuracy": sum(whole) / len(whole)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=8000, help="training graphs (|D_syn|)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--degree", type=int, default=2)
    parser.add_argument("--path-length", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--eval-size", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as folder:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        build_scratch_model(folder, words=[str(i) for i in range(args.nodes)] + ["|", "/", "="], hidden=args.hidden,
                            layers=args.layers, heads=args.heads, max_positions=64, seed=args.seed)
        tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)
    train = graphs(args.n, args, seed=1000 + args.seed)
    validation = graphs(args.eval_size, args, seed=10_000_000 + args.seed)  # a split of its own
    rows = [encode(tokenizer, graph) for graph in train]
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, args.steps // 20)))
    order, started, best = random.Random(args.seed), time.monotonic(), None
    for step in range(1, args.steps + 1):
        loss = batch_loss(model, order.sample(rows, args.batch), tokenizer.pad_token_id)
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % args.every == 0 or step == args.steps:
            held_out = accuracy(model, tokenizer, validation, args.path_length)
            own = accuracy(model, tokenizer, train[:args.eval_size], args.path_length)
            gap = own["accuracy"] - held_out["accuracy"]
            row = {"step": step, "loss": round(loss.item(), 4), **{k: round(v, 3) for k, v in held_out.items()},
                   "train": round(own["accuracy"], 3), "gap": round(gap, 3),
                   "epochs": round(step * args.batch / args.n, 1), "s": round(time.monotonic() - started)}
            print(row, flush=True)
            if best is None or not best["passes"]:
                best = {**row, "passes": held_out["given_first"] >= FOLLOW_GATE and gap <= MEMORISATION_GAP}
    print(f"n={args.n} steps={args.steps} best_step={best['step']} first_move={best['first_move']} "
          f"given_first={best['given_first']} validation={best['accuracy']} train={best['train']} gap={best['gap']}")


if __name__ == "__main__":
    main()
