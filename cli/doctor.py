"""`vqedit doctor`: check the installation, the model import, the tokenizer and the student.

Exit status 0 when every check passes, 1 otherwise; `--json` prints the findings as one object.
"""

import argparse
import json
import platform

import torch

from vqedit import __version__
from vqedit.engine.checkpoint import ModelLoadError, load, load_default
from vqedit.engine.tokens import TokenizedText
from vqedit.text.edit import Edit

SAMPLE = ("Quarterly profits at the media giant jumped 76% to $1.13bn (£600m) for the three "
          "months to December, from $639m a year earlier.\n\nThe firm, now one of the biggest "
          "investors in the search engine, benefited from sales of high-speed connections.")
EDITS = [Edit(0, 9, "Yearly"), Edit(40, 40, " suddenly"), Edit(120, 124, ""),
         Edit(len(SAMPLE) - 1, len(SAMPLE), "!\r\n\r\nNaïve café 😀 résumé.")]
PARITY_TOLERANCE = 1e-4
# The shipped student's pooled embedding of SAMPLE keeps cosine 0.83 to the base's; its eval's
# 10th percentile over BBC test articles is 0.78 (MODEL.md). Far less means a damaged file.
STUDENT_COSINE = 0.7


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="the model to check (default: the default model)")
    parser.add_argument("--json", action="store_true", help="print a JSON object")


def run(args: argparse.Namespace) -> int:
    loaded = load(args.model)
    tok = loaded.tokenizer
    ids = torch.tensor([tok.wrap(tok.encode(SAMPLE).ids)])
    with torch.no_grad():
        ours = loaded.model(ids, quantize=False).hidden
        theirs = loaded.hf_model(input_ids=ids).last_hidden_state
    parity = float((ours - theirs).abs().max())
    doc = TokenizedText(tok, SAMPLE)
    tokenizer_ok = True
    for edit in EDITS:
        doc.apply(edit)
        tokenizer_ok &= doc.tokens == tok.encode(doc.text)
    config = loaded.model.config
    report = {
        "vqedit": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": {"source": loaded.source, "family": config.family, "layers": config.n_layers,
                  "d_model": config.d_model, "heads": config.n_heads,
                  "window": config.max_positions, "codebooks_fitted": loaded.model.quantizable},
        "parity_max_abs_diff": parity, "parity_ok": parity <= PARITY_TOLERANCE,
        "tokenizer_ok": tokenizer_ok,
    }
    if args.model is None:
        report["student"] = _student_check()
    ok = report["parity_ok"] and tokenizer_ok and report.get("student", {}).get("ok", True)
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:20} {value}")
        print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


def _student_check() -> dict:
    """Does the shipped student load onto the base, and does it still agree with the base?"""
    try:
        loaded = load_default()
    except ModelLoadError as e:
        return {"ok": False, "error": str(e)}
    tok = loaded.tokenizer
    ids = torch.tensor([tok.wrap(tok.encode(SAMPLE).ids)])
    with torch.no_grad():
        student = loaded.model(ids).hidden.mean(1)
        teacher = loaded.hf_model(input_ids=ids).last_hidden_state.mean(1)
    cosine = float(torch.nn.functional.cosine_similarity(student, teacher)[0])
    return {"ok": cosine >= STUDENT_COSINE, "file": str(loaded.student),
            "cosine_to_base": round(cosine, 4), "codewords": loaded.model.config.codebook_size}
