"""`vqedit train distill`: a VQ student distilled from a dense base model.

Usage:
    vqedit train distill --out runs/minilm            # the default: all-MiniLM-L6-v2, BBC text
    vqedit train distill --out runs/opt --model ~/models/opt-125m --text notes/ --steps 3000
    vqedit train distill --out runs/minilm --resume   # go on from the last checkpoint

Trains on unlabelled text: the BBC News training split (never its test split) plus any `--text`
files or folders of .txt/.md files. Codebooks start from k-means on the base's head outputs;
the objective is `engine/distill.py`'s. Every `--save-every` steps the whole run (weights,
optimizer, random states) goes to OUT/checkpoint.pt, so `--resume` continues exactly; at the
end OUT/student.safetensors holds the student (use it with `--student`) and OUT/log.jsonl the
losses. A GPU is used when there is one.
"""

import argparse
import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from vqedit.engine import student as students
from vqedit.engine.checkpoint import LoadedModel, from_hf, load
from vqedit.engine.corpus import bbc_articles, is_test
from vqedit.engine.distill import (
    BATCH_LENGTHS,
    Objective,
    objective_losses,
    simulated_positions,
    update_codewords,
)
from vqedit.engine.kmeans import fit_codebooks
from vqedit.engine.model import VQTransformer
from vqedit.main import CliError

WARMUP = 50  # steps of linear learning-rate warm-up before the cosine decay


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, log)")
    parser.add_argument("--model", help="base model directory (default: all-MiniLM-L6-v2)")
    parser.add_argument("--text", type=Path, action="append", default=[],
                        help="more training text: a file, or a folder of .txt/.md files")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--tokens-per-step", type=int, default=1024,
                        help="tokens per batch; window lengths vary per step")
    parser.add_argument("--codebook-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--stability", type=float, default=Objective.stability,
                        help="weight of the code-stability term")
    parser.add_argument("--ratio", type=float, default=Objective.ratio,
                        help="margin: the own codeword this much nearer than the next (squared)")
    parser.add_argument("--save-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--resume", action="store_true", help="continue OUT/checkpoint.pt")
    parser.add_argument("--stop-after", type=int,
                        help="stop after this many steps of this invocation (go on with --resume)")


def _texts(paths: list[Path]) -> list[str]:
    """The BBC training split plus the user's files, refusing what cannot be read as text."""
    texts = [a.text for a in bbc_articles() if not is_test(a)]
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".md"))
            if not files:
                raise CliError(f"{path}: no .txt or .md files in this folder")
        elif path.is_file():
            files = [path]
        else:
            raise CliError(f"no such file or folder: {path}")
        for file in files:
            try:
                texts.append(file.read_text(encoding="utf-8"))
            except UnicodeDecodeError:
                raise CliError(f"{file} is not a UTF-8 text file") from None
    return texts


class Windows:
    """Random token windows from one stream of all training text, wrapped in special tokens."""

    def __init__(self, loaded: LoadedModel, texts: list[str]) -> None:
        self.tokenizer = loaded.tokenizer
        ids = [i for text in tqdm(texts, desc="tokenizing", leave=False)
               for i in loaded.tokenizer.encode(text).ids]
        self.stream = torch.tensor(ids)
        self.specials = len(loaded.tokenizer.wrap([]))

    def batch(self, length: int, size: int, rng: random.Random) -> torch.Tensor:
        inner = length - self.specials
        if len(self.stream) < inner:
            raise CliError(f"too little training text: {len(self.stream)} tokens")
        starts = [rng.randrange(len(self.stream) - inner + 1) for _ in range(size)]
        return torch.tensor([self.tokenizer.wrap(self.stream[s:s + inner].tolist())
                             for s in starts])  # (B, T)


def _learning_rate(step: int, steps: int, peak: float) -> float:
    if step < WARMUP:
        return peak * (step + 1) / WARMUP
    progress = (step - WARMUP) / max(1, steps - WARMUP)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _settings(args: argparse.Namespace) -> dict:
    """What a resumed run must share with the run it continues."""
    return {"model": args.model, "text": [str(p) for p in args.text], "steps": args.steps,
            "tokens_per_step": args.tokens_per_step, "codebook_size": args.codebook_size,
            "lr": args.lr, "stability": args.stability, "ratio": args.ratio, "seed": args.seed}


def _optimizer(student: VQTransformer, lr: float) -> torch.optim.Optimizer:
    """AdamW on the weights. Token embeddings stay frozen (so they need not ship); codewords
    follow their activations (`update_codewords`), not the gradient."""
    student.token_embedding.weight.requires_grad_(False)
    for block in student.blocks:
        block.codebook.codewords.requires_grad_(False)
    weights = [p for p in student.parameters() if p.requires_grad]
    return torch.optim.AdamW(weights, lr=lr, weight_decay=0.0)


def run(args: argparse.Namespace) -> int:
    if args.steps < 1 or args.codebook_size < 2 or (args.stop_after or 1) < 1:
        raise CliError("need --steps ≥ 1, --stop-after ≥ 1 and --codebook-size ≥ 2")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    checkpoint_path = args.out / "checkpoint.pt"
    if args.resume and not checkpoint_path.is_file():
        raise CliError(f"nothing to resume: {checkpoint_path} does not exist")
    if not args.resume and checkpoint_path.exists():
        raise CliError(f"{args.out} already holds a run: pass --resume, or another --out")
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    generator = torch.Generator().manual_seed(args.seed)

    loaded = load(args.model)
    window = loaded.model.config.max_positions
    lengths = [n for n in BATCH_LENGTHS if n <= window] or [window]
    if args.tokens_per_step < max(lengths):
        raise CliError(f"--tokens-per-step must be ≥ {max(lengths)}, the longest window")
    windows = Windows(loaded, _texts(args.text))
    teacher = loaded.model.to(device)
    student = from_hf(loaded.hf_model, args.codebook_size)
    objective = Objective(stability=args.stability, ratio=args.ratio)
    step, elapsed = 0, 0.0
    if args.resume:
        saved = torch.load(checkpoint_path, weights_only=False)
        if saved["settings"] != _settings(args):
            raise CliError(f"{checkpoint_path} was made with other settings: {saved['settings']}")
        student.load_state_dict(saved["student"])
        step, elapsed = saved["step"], saved["elapsed"]
        _truncate_log(args.out / "log.jsonl", step)
        rng.setstate(saved["rng"])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
    else:
        print("fitting codebooks by k-means on the base model's head outputs")
        fit_codebooks(student, list(windows.batch(min(256, window), 16, rng).split(1)))
    student = student.to(device).train()
    optimizer = _optimizer(student, args.lr)
    if args.resume:
        optimizer.load_state_dict(saved["optimizer"])
    args.out.mkdir(parents=True, exist_ok=True)

    last = min(args.steps, step + (args.stop_after or args.steps))
    with (args.out / "log.jsonl").open("a") as log, \
            tqdm(total=args.steps, initial=step, desc="distilling") as bar:
        while step < last:
            started = time.perf_counter()
            length = rng.choice(lengths)
            ids = windows.batch(length, args.tokens_per_step // length, rng)
            positions = torch.stack([
                simulated_positions(length, student.config.max_positions, rng)
                if rng.random() < 0.5 else torch.arange(length, dtype=torch.float64)
                for _ in range(len(ids))])  # (B, T) half edited, half canonical
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(step, args.steps, args.lr)
            losses = objective_losses(student, teacher, ids.to(device), positions.to(device),
                                      objective, step / args.steps, generator)
            optimizer.zero_grad(set_to_none=True)
            losses.total.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            optimizer.step()
            update_codewords(student, losses.heads, losses.codes, objective.decay)
            step += 1
            elapsed += time.perf_counter() - started
            record = {"step": step, "length": length, "loss": round(losses.total.item(), 5),
                      **{k: round(v, 5) for k, v in losses.parts.items()},
                      "flips_per_layer": round(losses.flips, 2), "elapsed_s": round(elapsed)}
            log.write(json.dumps(record) + "\n")
            bar.set_postfix(pooled=f"{losses.parts['pooled']:.4f}",
                            blend=f"{losses.parts['blend']:.2f}",
                            flips=f"{losses.flips:.1f}/{length}")
            bar.update()
            if step % args.save_every == 0 or step == last:
                log.flush()
                _save_checkpoint(checkpoint_path, {
                    "settings": _settings(args), "student": student.state_dict(),
                    "optimizer": optimizer.state_dict(), "step": step, "elapsed": elapsed,
                    "rng": rng.getstate(), "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state()})

    if step < args.steps:
        print(json.dumps({"checkpoint": str(checkpoint_path), "steps": step,
                          "train_seconds": round(elapsed)}))
        return 0
    student = student.cpu().eval()
    size = students.save(student, loaded.model.cpu(), args.out / "student.safetensors", {
        "base": loaded.source.rsplit("/", 1)[-1], "objective": json.dumps(asdict(objective)),
        "settings": json.dumps(_settings(args)), "steps": str(step)})
    print(json.dumps({"student": str(args.out / "student.safetensors"), "bytes": size,
                      "steps": step, "train_seconds": round(elapsed)}))
    return 0


def _save_checkpoint(path: Path, state: dict) -> None:
    """Written beside, then renamed: an interrupted save never corrupts the last checkpoint."""
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    partial.replace(path)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint: the resumed run writes those steps again."""
    if path.is_file():
        lines = path.read_text().splitlines()
        path.write_text("".join(f"{line}\n" for line in lines if json.loads(line)["step"] <= step))
