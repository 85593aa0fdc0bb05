"""`vqedit eval --json PATH`: how good and how incremental a student is, against its teacher.

Usage:
    vqedit eval --json eval.json                       # the shipped student
    vqedit eval --student runs/k16/student.safetensors --json k16.json \\
        --plot tradeoff.png --compare eval.json        # one more point on the trade-off plot

Protocol (MODEL.md): the BBC News corpus's fixed split (`lab/corpus.py: is_test`). Teacher
(the dense base) and student embed every article by full passes; each gets a linear head fitted
the same way (`LinearHead.fit`) on its own training-split embeddings; accuracies are on the test
split. Embedding cosines compare student and teacher pooled embeddings of test articles.
`flips_per_layer` counts, per layer, the tokens whose codes change after one token of a test
window is replaced (full passes, mean over windows); `flipped_groups_per_token`, how many of
each token's codes change; `groups_below_margin`, the share of codes held by less than the
training objective's margin before the edit (what exact-mode savings depend on). The engine
figures are `vqedit bench engine`'s on test articles in exact and sticky mode;
`label_agreement` is the share of edits on which the incremental state's label equals a fresh
full pass's.
"""

import argparse
import json
import math
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vqedit.classify import embed
from vqedit.engine.checkpoint import LoadedModel, load
from vqedit.engine.heads import LinearHead
from vqedit.engine.mode import STICKY_DELTA, Mode
from vqedit.engine.student import metadata
from vqedit.lab.bench.engine import bench, documents, engine_report
from vqedit.lab.corpus import Article, bbc_articles, is_test
from vqedit.lab.train.distill import Objective, margin_hinge, replace_one
from vqedit.main import CliError
from vqedit.model_choice import add_model_arguments, load_model

FLIP_WINDOWS = 32  # test windows for flips_per_layer
MARGIN_WINDOWS = 8  # windows per distance computation: (8, T, Q, K) floats, ~100 MB at 512 tokens


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--json", type=Path, help="write the JSON object here (required unless "
                                                  "--plot-only)")
    parser.add_argument("--tokens", type=int, default=512, help="segment length for the engine")
    parser.add_argument("--edits", type=int, default=100, help="edits per engine mode")
    parser.add_argument("--edits-per-doc", type=int, default=25)
    parser.add_argument("--delta", type=float, default=STICKY_DELTA,
                        help="sticky mode's hysteresis δ")
    parser.add_argument("--sweep", type=int, default=2, help="sticky mode's sweep per edit")
    parser.add_argument("--check-every", type=int, default=5)
    parser.add_argument("--limit", type=int, help="at most this many articles per split")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--head-out", type=Path, help="also save the student's BBC head here")
    parser.add_argument("--plot", type=Path, help="write the accuracy / operations trade-off")
    parser.add_argument("--compare", type=Path, nargs="*", default=[],
                        help="earlier eval JSON files to draw beside this one")
    parser.add_argument("--plot-only", action="store_true",
                        help="evaluate nothing: draw --plot from the --compare files")


def run(args: argparse.Namespace) -> int:
    earlier = [_read_eval(path) for path in args.compare]
    if args.plot_only:
        if not args.plot or not earlier:
            raise CliError("--plot-only needs --plot PNG and at least one --compare JSON")
        _plot(earlier, args.plot)
        return 0
    if args.json is None:
        raise CliError("--json PATH is required")
    if args.dense:
        raise CliError("eval measures a student: --dense leaves nothing to measure")
    torch.set_num_threads(args.threads)
    student = load_model(args)
    teacher = load(args.model)
    if not student.model.quantizable:
        raise CliError("the model has no trained codebooks: give --student FILE")
    articles = bbc_articles()
    train = _subset([a for a in articles if not is_test(a)], args.limit)
    test = _subset([a for a in articles if is_test(a)], args.limit)

    teacher_head, teacher_test = _fit_head(teacher, train, test, "teacher")
    student_head, student_test = _fit_head(student, train, test, "student")
    cosines = F.cosine_similarity(student_test, teacher_test).numpy()  # (M,)
    labels = [a.label for a in test]
    report = {
        "eval": "student", "model": student.description, "weights": student.model.weights,
        "codebook_size": student.model.config.codebook_size,
        "codebook_groups": student.model.config.codebook_groups,
        "training": _training(student), "train_articles": len(train),
        "test_articles": len(test),
        "teacher_accuracy": _accuracy(teacher_head, teacher_test, labels),
        "student_accuracy": _accuracy(student_head, student_test, labels),
        "embedding_cosine_median": round(float(np.median(cosines)), 4),
        "embedding_cosine_p10": round(float(np.percentile(cosines, 10)), 4),
        "embedding_cosine_min": round(float(cosines.min()), 4),
        **_stability(student, test, args.tokens, args.seed),
        "tokens": args.tokens, "threads": args.threads,
    }
    settings = {"model": report["model"], "codebooks": "trained", "tokens": args.tokens,
                "threads": args.threads, "kinds": "mixed"}
    for mode in (Mode(), Mode(delta=args.delta, sweep=args.sweep)):
        texts = documents(student, args.tokens, test)
        samples, engine = bench(student, mode, texts, _bench_args(args))
        figures = engine_report(settings, student, mode, samples, engine)
        agree = [student_head.classify(live).label == student_head.classify(full).label
                 for live, full in zip(samples.embeddings, samples.full_embeddings, strict=True)]
        figures["label_agreement"] = round(sum(agree) / len(agree), 4)
        report[mode.name] = figures
    line = json.dumps(report)
    print(line)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(line + "\n")
    if args.head_out:
        args.head_out.parent.mkdir(parents=True, exist_ok=True)
        student_head.save(args.head_out)
    if args.plot:
        _plot([*earlier, report], args.plot)
    return 0


def _subset(articles: list[Article], limit: int | None) -> list[Article]:
    if limit is None or limit >= len(articles):
        return articles
    return [articles[i * len(articles) // limit] for i in range(limit)]


def _fit_head(loaded: LoadedModel, train: list[Article], test: list[Article],
              who: str) -> tuple[LinearHead, torch.Tensor]:
    """The head protocol: fit on the training split's embeddings; return the test embeddings."""
    fit = torch.stack([embed(loaded, a.text) for a in tqdm(train, desc=f"{who}: train split")])
    head = LinearHead.fit(fit, [a.label for a in train])
    return head, torch.stack([embed(loaded, a.text) for a in tqdm(test, desc=f"{who}: test")])


def _accuracy(head: LinearHead, embeddings: torch.Tensor, labels: list[str]) -> float:
    hits = sum(head.classify(e).label == label for e, label in zip(embeddings, labels, strict=True))
    return round(hits / len(labels), 4)


@torch.no_grad()
def _stability(loaded: LoadedModel, test: list[Article], tokens: int, seed: int) -> dict:
    """How stable the student's codes are under a one-token replacement, layer by layer.

    flips_per_layer: mean tokens (of `tokens`) with any code flipped; flipped_groups_per_token:
    mean codes flipped per token (of Q); groups_below_margin: the share of codes held with less
    than the training objective's margin (`Objective.ratio`), before the edit.
    """
    tok, model = loaded.tokenizer, loaded.model
    inner = tokens - len(tok.wrap([]))
    stream = [i for a in test[:200] for i in tok.encode(a.text).ids]
    rng, generator = random.Random(seed), torch.Generator().manual_seed(seed)
    starts = [rng.randrange(len(stream) - inner) for _ in range(FLIP_WINDOWS)]
    ids = torch.tensor([tok.wrap(stream[s:s + inner]) for s in starts])  # (W, T)
    edited, at = replace_one(ids, generator)
    before, after = model(ids), model(edited)
    flipped = before.codes != after.codes  # (L, W, T, Q)
    flipped[:, torch.arange(len(at)), at] = False
    below = []
    for block, heads, codes in zip(model.blocks, before.heads, before.codes, strict=True):
        hinges = [margin_hinge(block.codebook.distances(h), c, Objective.ratio)  # (8, T, Q)
                  for h, c in zip(heads.split(MARGIN_WINDOWS), codes.split(MARGIN_WINDOWS),
                                  strict=True)]
        below.append(round(float(torch.cat(hinges).gt(0).float().mean()), 4))
    others = (ids.shape[1] - 1) * len(ids)  # tokens that were not replaced
    return {
        "flips_per_layer": [round(float(v), 2)
                            for v in flipped.any(-1).sum(-1).float().mean(-1)],
        "flipped_groups_per_token": [round(float(v) / others, 3)
                                     for v in flipped.sum((1, 2, 3))],
        "groups_below_margin": below, "margin_ratio": Objective.ratio,
    }


def _training(loaded: LoadedModel) -> dict:
    """How the student was made, from its file's metadata."""
    meta = metadata(loaded.student)
    return {key: json.loads(meta[key]) for key in ("settings", "objective") if key in meta} | {
        "steps": int(meta.get("steps", 0))}


def _bench_args(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(edits=args.edits, edits_per_doc=args.edits_per_doc, kinds="mixed",
                              check_every=args.check_every, seed=args.seed)


def _read_eval(path: Path) -> dict:
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CliError(f"{path} is not an eval JSON file: {e}") from None
    if report.get("eval") != "student":
        raise CliError(f"{path} is not an eval JSON file")
    return report


def _plot(reports: list[dict], path: Path) -> None:
    """Student accuracy against operations saved, one point per student and mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6))
    for mode, marker in (("exact", "o"), ("sticky", "s")):
        xs = [r[mode]["ops_ratio_median"] for r in reports]
        ys = [100 * r["student_accuracy"] for r in reports]
        ax.scatter(xs, ys, marker=marker, label=f"{mode} mode")
        # Points closer than ~25% in x at one accuracy (often runs of one student) share a label.
        labels: dict[tuple[int, float], list[int]] = {}
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            labels.setdefault((round(10 * math.log10(x)), y), []).append(i)
        for (_, y), members in labels.items():
            ax.annotate(",".join(str(i + 1) for i in members), (max(xs[i] for i in members), y),
                        fontsize=8, xytext=(5, 3), textcoords="offset points")
    key = []
    for number, r in enumerate(reports, 1):
        settings = r["training"].get("settings", {})
        origin = " from --init" if settings.get("init") else ""
        key.append(f"{number}: K={r['codebook_size']}, G={r.get('codebook_groups', 1)}, "
                   f"{settings.get('steps', '?')} steps{origin}, "
                   f"stability={settings.get('stability', '?')}, sticky δ={r['sticky']['delta']:g}")
    fig.text(0.01, 0.01, "\n".join(key), fontsize=8, va="bottom")
    teacher = 100 * reports[-1]["teacher_accuracy"]
    ax.axhline(teacher, color="black", linestyle="--", label=f"teacher {teacher:.1f}%")
    ax.set_xscale("log")
    ax.set_xlabel(f"dense MACs / incremental MACs per edit (median, {reports[-1]['tokens']} "
                  f"tokens, {reports[-1]['threads']} thread(s))")
    ax.set_ylabel("BBC test accuracy (%)")
    ax.set_title("accuracy / operations trade-off over codebook size and stability weight")
    ax.legend(loc="lower center")
    fig.tight_layout(rect=(0, 0.04 + 0.03 * len(reports), 1, 1))
    fig.savefig(path, dpi=120)
