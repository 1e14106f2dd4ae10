"""Trainer benchmark: tokens/s of NegRL's SFT and DPO next to TRL's SFTTrainer and DPOTrainer, on CPU,
with the same tiny model, data, batches, seed and hyperparameters; prints both loss curves.

    .venv/bin/python bench/trainer.py [--steps 10] [--hidden 256 --layers 4 --heads 4]

TRL is installed for this benchmark only, in an overlay environment under .cache/trl-venv that
sees the project's .venv (same torch and transformers) without changing it; the benchmark creates
it on first use and re-runs itself there. Each system trains in its own subprocess. NegRL runs the
real stage (DeepSpeed, ZeRO-2, fp32); TRL runs with its defaults except where the two must agree
(lr, schedule, batch, precision, no truncation; the reference log-probs precomputed by both).

Tokens/s counts the real (non-padding) tokens fed to the model, divided by the time spent in
optimizer steps (forward, backward, update), the reference pass and set-up excluded for both.
The last line is `name=value` pairs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench-trainer"
TRL_VENV = ROOT / ".cache" / "trl-venv"
TRL_VERSION = "1.16.0"
GSM8K = ROOT.parent / "shared" / "datasets" / "gsm8k" / "train.jsonl"
SEED = 0


def trl_python() -> Path:
    """A Python that imports trl and the project's .venv: this one, or the overlay (made on demand)."""
    try:
        import trl  # noqa: F401

        return Path(sys.executable)
    except ImportError:
        pass
    python = TRL_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TRL_VENV)], check=True)
        site = subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip()
        overlay = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 check=True, capture_output=True, text=True).stdout.strip()
        Path(overlay, "negrl-project-venv.pth").write_text(f"import site; site.addsitedir({site!r})\n")
    check = subprocess.run([str(python), "-c", "import trl"], capture_output=True)
    if check.returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"trl=={TRL_VERSION}"], check=True)
    return python


def gsm8k_rows(limit: int) -> list[dict]:
    with open(GSM8K) as handle:
        return [json.loads(line) for line, _ in zip(handle, range(limit), strict=False)]


def prepare(args) -> dict:
    """The tiny model and, in NegRL's data order, the SFT and DPO data for both systems."""
    from transformers import AutoTokenizer

    from negrl_trainer.batch import Schedule, step_indices
    from negrl_trainer.scratch_model import build_scratch_model

    model = CACHE / f"model-h{args.hidden}-l{args.layers}"
    if not (model / "config.json").exists():
        texts = [text for row in gsm8k_rows(3000) for text in (row["question"], row["answer"])]
        build_scratch_model(model, texts, hidden=args.hidden, layers=args.layers, heads=args.heads,
                            vocab_size=512, max_positions=1024, seed=SEED)
    tokenizer = AutoTokenizer.from_pretrained(model)

    def fits(prompt: str, *responses: str) -> bool:
        prompt_len = len(tokenizer(prompt)["input_ids"])
        return all(prompt_len + len(tokenizer(r)["input_ids"]) + 1 <= args.max_length for r in responses)

    sft, dpo = [], []
    for row in gsm8k_rows(4000):
        prompt, chosen = f"Question: {row['question']}\nAnswer:", " " + row["answer"]
        body, _, number = row["answer"].rpartition("####")
        rejected = f" {body}#### {int(number.strip().replace(',', '') or 0) + 7}"
        if fits(prompt, chosen, rejected):
            sft.append({"prompt": prompt, "response": chosen})
            dpo.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "kind": "outcome"})
    paths = {"model": str(model)}
    for name, rows, micro in [("sft", sft, args.sft_batch), ("dpo", dpo, args.dpo_batch)]:
        rows = rows[: args.steps * micro]
        if len(rows) < args.steps * micro:
            raise SystemExit(f"only {len(rows)} {name} examples fit max_length {args.max_length}")
        order = [i for step in range(args.steps) for i in step_indices(Schedule(len(rows), micro, 1.0), SEED, step)]
        paths[f"negrl_{name}"] = write_jsonl(CACHE / f"negrl-{name}.jsonl", rows)
        trl_rows = [trl_row(rows[i]) for i in order]
        paths[f"trl_{name}"] = write_jsonl(CACHE / f"trl-{name}.jsonl", trl_rows)
    return paths


def trl_row(row: dict) -> dict:
    if "response" in row:
        return {"prompt": row["prompt"], "completion": row["response"]}
    return {"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]}


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def run_negrl(stage: str, paths: dict, args) -> dict:
    import shutil

    from negrl_operator.api.stage_config import TrainStageConfig
    from negrl_trainer.loop import TRAIN_LOG, run_training

    output = CACHE / f"negrl-{stage}-out"
    shutil.rmtree(output, ignore_errors=True)
    micro = args.sft_batch if stage == "sft" else args.dpo_batch
    config = TrainStageConfig(
        output_dir=str(output), stage=stage, model_path=paths["model"], data=[paths[f"negrl_{stage}"]],
        params={"learning_rate": args.lr, "max_steps": args.steps, "epochs": 1, "micro_batch_size": micro,
                "gradient_accumulation": 1, "warmup_ratio": 0.1, "schedule": "cosine", "max_length": args.max_length,
                "beta": 0.1, "zero_stage": 2, "precision": "fp32", "seed": SEED},
    )
    began = time.perf_counter()
    run_training(config)
    wall = time.perf_counter() - began
    log = [json.loads(line) for line in (output / TRAIN_LOG).read_text().splitlines()]
    return {"losses": [r["loss"] for r in log], "tokens": sum(r["tokens"] for r in log),
            "step_seconds": sum(r["tokens"] / r["tokens_per_second"] for r in log), "wall_seconds": wall}


def trl_trainer(stage: str, paths: dict, args, output: Path, timer):
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    model = AutoModelForCausalLM.from_pretrained(paths["model"], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(paths["model"])
    dataset = load_dataset("json", data_files=paths[f"trl_{stage}"], split="train")
    common = dict(
        output_dir=str(output), learning_rate=args.lr, max_steps=args.steps, num_train_epochs=1,
        gradient_accumulation_steps=1, warmup_steps=math.ceil(0.1 * args.steps), lr_scheduler_type="cosine",
        weight_decay=0.0, max_grad_norm=1.0, max_length=args.max_length, seed=SEED, data_seed=SEED, use_cpu=True,
        bf16=False, fp16=False, logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True,
        train_sampling_strategy="sequential", dataloader_num_workers=0, optim="adamw_torch",
    )
    if stage == "sft":
        config = SFTConfig(per_device_train_batch_size=args.sft_batch, completion_only_loss=True, packing=False,
                           **common)
        return SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                          callbacks=[timer])
    config = DPOConfig(per_device_train_batch_size=args.dpo_batch, beta=0.1, loss_type=["sigmoid"],
                       precompute_ref_log_probs=True, **common)
    return DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer, callbacks=[timer])


def trl_tokens(trainer, stage: str) -> int:
    data = trainer.train_dataset
    if stage == "sft":
        return sum(len(ids) for ids in data["input_ids"])
    return sum(2 * len(p) + len(c) + len(r) for p, c, r in
               zip(data["prompt_ids"], data["chosen_ids"], data["rejected_ids"], strict=True))


def run_trl(stage: str, paths: dict, args) -> dict:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        seconds = 0.0

        def on_step_begin(self, *_, **__):
            self.began = time.perf_counter()

        def on_step_end(self, *_, **__):
            StepTimer.seconds += time.perf_counter() - self.began

    timer = StepTimer()
    began = time.perf_counter()
    trainer = trl_trainer(stage, paths, args, CACHE / f"trl-{stage}-out", timer)
    trainer.train()
    wall = time.perf_counter() - began
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"losses": losses, "tokens": trl_tokens(trainer, stage), "step_seconds": StepTimer.seconds,
            "wall_seconds": wall}


def worker(name: str, paths: dict, args) -> dict:
    system, stage = name.split("-")
    if system == "negrl":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        return run_negrl(stage, paths, args)
    return run_trl(stage, paths, args)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--sft-batch", type=int, default=8)
    parser.add_argument("--dpo-batch", type=int, default=4, help="pairs per step")
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def forwarded(args) -> list[str]:
    return [f"--steps={args.steps}", f"--sft-batch={args.sft_batch}", f"--dpo-batch={args.dpo_batch}",
            f"--max-length={args.max_length}", f"--lr={args.lr}", f"--hidden={args.hidden}",
            f"--layers={args.layers}", f"--heads={args.heads}"]


def spawn(python: Path, name: str, paths_file: Path, args) -> dict:
    result = CACHE / f"result-{name}.json"
    result.unlink(missing_ok=True)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu"}
    process = subprocess.run([str(python), __file__, "--worker", name, "--paths", str(paths_file),
                              "--result", str(result), *forwarded(args)], env=env, capture_output=True, text=True)
    if process.returncode != 0 or not result.exists():
        raise SystemExit(f"{name} failed (exit {process.returncode}):\n{process.stderr[-4000:]}")
    return json.loads(result.read_text())


def report(stage: str, negrl: dict, trl: dict) -> dict:
    print(f"\n{stage.upper()}: step  negrl_loss  trl_loss")
    for step, (ours, theirs) in enumerate(zip(negrl["losses"], trl["losses"], strict=False)):
        print(f"  {step:4d}  {ours:10.4f}  {theirs:8.4f}")
    ours_rate = negrl["tokens"] / negrl["step_seconds"]
    theirs_rate = trl["tokens"] / trl["step_seconds"]
    print(f"  tokens {negrl['tokens']} (negrl) vs {trl['tokens']} (trl); step time {negrl['step_seconds']:.2f}s vs "
          f"{trl['step_seconds']:.2f}s; whole run {negrl['wall_seconds']:.1f}s vs {trl['wall_seconds']:.1f}s")
    gaps = [abs(a - b) for a, b in zip(negrl["losses"], trl["losses"], strict=False)]
    return {
        f"{stage}_tokens_per_s_negrl": round(ours_rate, 1), f"{stage}_tokens_per_s_trl": round(theirs_rate, 1),
        f"{stage}_speedup_vs_trl": round(ours_rate / theirs_rate, 3),
        f"{stage}_loss0_negrl": round(negrl["losses"][0], 4), f"{stage}_loss0_trl": round(trl["losses"][0], 4),
        f"{stage}_max_loss_gap": round(max(gaps), 4), f"{stage}_tokens_equal": int(negrl["tokens"] == trl["tokens"]),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        paths = json.loads(Path(args.paths).read_text())
        Path(args.result).write_text(json.dumps(worker(args.worker, paths, args)))
        return 0
    python = trl_python()
    versions = subprocess.run([str(python), "-c", "import trl, torch, transformers, deepspeed; print("
                               "f'trl {trl.__version__} torch {torch.__version__} transformers {transformers.__version__} "
                               "deepspeed {deepspeed.__version__}')"], capture_output=True, text=True, check=True)
    print(versions.stdout.strip(), f"| CPU threads {os.cpu_count()}")
    paths_file = CACHE / "paths.json"
    paths_file.parent.mkdir(parents=True, exist_ok=True)
    paths_file.write_text(json.dumps(prepare(args)))
    figures = {}
    for stage in ("sft", "dpo"):
        negrl = spawn(python, f"negrl-{stage}", paths_file, args)
        trl = spawn(python, f"trl-{stage}", paths_file, args)
        figures.update(report(stage, negrl, trl))
    print(" ".join(f"{key}={value}" for key, value in figures.items()))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
