"""`vqedit train distill`: a VQ student distilled from a dense base model.

Usage:
    vqedit train distill --out runs/minilm            # the default: all-MiniLM-L6-v2, BBC text
    vqedit train distill --out runs/opt --model ~/models/opt-125m --text notes/ --steps 3000
    vqedit train distill --out runs/minilm --resume   # go on from the last checkpoint
    vqedit train distill --out runs/more --init engine/default/student.safetensors --lr 3e-5

Trains on unlabelled text: the BBC News training split (never its test split) plus any `--text`
files or folders of .txt/.md files. Codebooks start from k-means on the base's head outputs;
the objective is `lab/train/distill.py`'s. `--init` trains a finished student further instead: its
weights and codebooks are the start, and it is fully quantized from the first step (no blending
in, commitment at its final weight), as the last phase of a run is. Every `--save-every` steps
the whole run (weights, optimizer, random states) goes to OUT/checkpoint.pt, so `--resume`
continues exactly; at the end OUT/student.safetensors holds the student (use it with
`--student`) and OUT/log.jsonl the losses. A GPU is used when there is one.
"""

import argparse
import json
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from vqedit.engine import student as students
from vqedit.engine.checkpoint import LoadedModel, from_hf, load
from vqedit.engine.model import VQTransformer
from vqedit.lab.corpus import bbc_articles, is_test
from vqedit.lab.train.distill import (
    BATCH_LENGTHS,
    Objective,
    objective_losses,
    simulated_positions,
    update_codewords,
)
from vqedit.lab.train.kmeans import fit_codebooks
from vqedit.main import CliError

WARMUP = 50  # steps of linear learning-rate warm-up before the cosine decay


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, log)")
    parser.add_argument("--model", help="base model directory (default: all-MiniLM-L6-v2)")
    parser.add_argument("--text", type=Path, action="append", default=[],
                        help="more training text: a file, or a folder of .txt/.md files")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--tokens-per-step", type=int, default=1024,
                        help="tokens per batch; window lengths vary per step")
    parser.add_argument("--codebook-size", type=int, default=64, help="codewords per group")
    parser.add_argument("--codebook-groups", type=int, default=8,
                        help="slices each head output is quantized in (product quantization)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--stability", type=float, default=Objective.stability,
                        help="weight of the code-stability term")
    parser.add_argument("--ratio", type=float, default=Objective.ratio,
                        help="margin: the own codeword this much nearer than the next (squared)")
    parser.add_argument("--save-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--resume", action="store_true", help="continue OUT/checkpoint.pt")
    parser.add_argument("--init", type=Path,
                        help="start from this student of the same base, fully quantized")
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
            "codebook_groups": args.codebook_groups, "lr": args.lr,
            "stability": args.stability, "ratio": args.ratio, "seed": args.seed,
            "init": str(args.init) if args.init else None}


def _optimizer(student: VQTransformer, lr: float) -> torch.optim.Optimizer:
    """AdamW on the weights. Token embeddings stay frozen (so they need not ship); codewords
    follow their activations (`update_codewords`), not the gradient."""
    student.token_embedding.weight.requires_grad_(False)
    for block in student.blocks:
        block.codebook.codewords.requires_grad_(False)
    weights = [p for p in student.parameters() if p.requires_grad]
    return torch.optim.AdamW(weights, lr=lr, weight_decay=0.0)


@dataclass
class Run:
    """What a checkpoint holds: restoring it continues the run exactly."""

    student: VQTransformer
    optimizer: torch.optim.Optimizer
    rng: random.Random  # window lengths, starts and simulated positions
    generator: torch.Generator  # edited copies
    step: int = 0
    elapsed: float = 0.0  # seconds of training, start-up excluded

    def checkpoint(self, settings: dict) -> dict:
        return {"settings": settings, "student": self.student.state_dict(),
                "optimizer": self.optimizer.state_dict(), "step": self.step,
                "elapsed": self.elapsed, "rng": self.rng.getstate(),
                "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state()}

    def restore(self, saved: dict) -> None:
        self.student.load_state_dict(saved["student"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.step, self.elapsed = saved["step"], saved["elapsed"]
        self.rng.setstate(saved["rng"])
        self.generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])


def run(args: argparse.Namespace) -> int:
    if args.steps < 1 or args.codebook_size < 2 or (args.stop_after or 1) < 1:
        raise CliError("need --steps ≥ 1, --stop-after ≥ 1 and --codebook-size ≥ 2")
    if args.codebook_groups < 1:
        raise CliError("need --codebook-groups ≥ 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    checkpoint_path = args.out / "checkpoint.pt"
    if args.resume and not checkpoint_path.is_file():
        raise CliError(f"nothing to resume: {checkpoint_path} does not exist")
    if not args.resume and checkpoint_path.exists():
        raise CliError(f"{args.out} already holds a run: pass --resume, or another --out")
    torch.manual_seed(args.seed)

    loaded = load(args.model)
    window = loaded.model.config.max_positions
    lengths = [n for n in BATCH_LENGTHS if n <= window] or [window]
    if args.tokens_per_step < max(lengths):
        raise CliError(f"--tokens-per-step must be ≥ {max(lengths)}, the longest window")
    windows = Windows(loaded, _texts(args.text))
    rng = random.Random(args.seed)
    student = _start(loaded, args, windows, rng).to(device).train()
    teacher = loaded.model.to(device)
    state = Run(student, _optimizer(student, args.lr), rng,
                torch.Generator().manual_seed(args.seed))
    if args.resume:
        saved = torch.load(checkpoint_path, weights_only=False, map_location=device)
        if saved["settings"] != _settings(args):
            raise CliError(f"{checkpoint_path} was made with other settings: {saved['settings']}")
        state.restore(saved)
        _truncate_log(args.out / "log.jsonl", state.step)
    args.out.mkdir(parents=True, exist_ok=True)

    objective = Objective(stability=args.stability, ratio=args.ratio)
    if args.init:  # the last phase of a run, from its first step
        final = objective.commitment[1]
        objective = replace(objective, anneal=0.0, commitment=(final, final))
    last = min(args.steps, state.step + (args.stop_after or args.steps))
    with (args.out / "log.jsonl").open("a") as log, \
            tqdm(total=args.steps, initial=state.step, desc="distilling") as bar:
        while state.step < last:
            record = _train_step(state, teacher, windows, rng.choice(lengths), objective, args,
                                 device)
            log.write(json.dumps(record) + "\n")
            bar.set_postfix(pooled=f"{record['pooled']:.4f}", blend=f"{record['blend']:.2f}",
                            flips=f"{record['flips_per_layer']:.1f}/{record['length']}")
            bar.update()
            if state.step % args.save_every == 0 or state.step == last:
                log.flush()
                _save_checkpoint(checkpoint_path, state.checkpoint(_settings(args)))

    if state.step < args.steps:
        print(json.dumps({"checkpoint": str(checkpoint_path), "steps": state.step,
                          "train_seconds": round(state.elapsed), "device": device.type}))
        return 0
    path = args.out / "student.safetensors"
    size = students.save(student.cpu().eval(), loaded.model.cpu(), path, {
        "base": loaded.name, "objective": json.dumps(asdict(objective)),
        "settings": json.dumps(_settings(args)), "steps": str(state.step)})
    print(json.dumps({"student": str(path), "bytes": size, "steps": state.step,
                      "train_seconds": round(state.elapsed), "device": device.type}))
    return 0


def _start(loaded: LoadedModel, args: argparse.Namespace, windows: Windows,
           rng: random.Random) -> VQTransformer:
    """The student before its first step: the base with k-means codebooks, or `--init`'s."""
    if args.init:
        try:
            student = students.apply(loaded.model, args.init)
        except students.StudentError as e:
            raise CliError(str(e)) from None
        chosen = (args.codebook_size, args.codebook_groups)
        own = (student.config.codebook_size, student.config.codebook_groups)
        if chosen != own:
            raise CliError(f"{args.init} has {own[0]} codewords in {own[1]} groups; pass "
                           f"--codebook-size {own[0]} --codebook-groups {own[1]}")
        return student
    try:
        student = from_hf(loaded.hf_model, args.codebook_size, args.codebook_groups)
    except ValueError as e:
        raise CliError(str(e)) from None
    if not args.resume:
        print("fitting codebooks by k-means on the base model's head outputs")
        window = loaded.model.config.max_positions
        fit_codebooks(student, list(windows.batch(min(256, window), 16, rng).split(1)))
    return student


def _train_step(state: Run, teacher: VQTransformer, windows: Windows, length: int,
                objective: Objective, args: argparse.Namespace, device: torch.device) -> dict:
    """One optimizer step on a batch of `length`-token windows; returns its log record."""
    started = time.perf_counter()
    ids = windows.batch(length, args.tokens_per_step // length, state.rng)  # (B, T)
    positions = torch.stack([
        simulated_positions(length, state.student.config.max_positions, state.rng)
        if state.rng.random() < 0.5 else torch.arange(length, dtype=torch.float64)
        for _ in range(len(ids))])  # (B, T) half as edits leave them, half canonical
    for group in state.optimizer.param_groups:
        group["lr"] = _learning_rate(state.step, args.steps, args.lr)
    losses = objective_losses(state.student, teacher, ids.to(device), positions.to(device),
                              objective, state.step / args.steps, state.generator)
    state.optimizer.zero_grad(set_to_none=True)
    losses.total.backward()
    torch.nn.utils.clip_grad_norm_(state.student.parameters(), 1.0)
    state.optimizer.step()
    update_codewords(state.student, losses.heads, losses.codes, objective.decay)
    state.step += 1
    state.elapsed += time.perf_counter() - started
    return {"step": state.step, "length": length, "loss": round(losses.total.item(), 5),
            **{k: round(v, 5) for k, v in losses.parts.items()},
            "flips_per_layer": round(losses.flips, 2), "elapsed_s": round(state.elapsed)}


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
