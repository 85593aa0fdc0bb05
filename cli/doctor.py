"""`vqedit doctor`: check the installation, the model import and the tokenizer.

Exit status 0 when every check passes, 1 otherwise; `--json` prints the findings as one object.
"""

import argparse
import json
import platform

import torch

from vqedit import __version__
from vqedit.engine.checkpoint import load
from vqedit.engine.tokens import TextEdit, TokenizedText

SAMPLE = ("Quarterly profits at the media giant jumped 76% to $1.13bn (£600m) for the three "
          "months to December, from $639m a year earlier.\n\nThe firm, now one of the biggest "
          "investors in the search engine, benefited from sales of high-speed connections.")
EDITS = [TextEdit(0, 9, "Yearly"), TextEdit(40, 40, " suddenly"), TextEdit(120, 124, ""),
         TextEdit(len(SAMPLE) - 1, len(SAMPLE), "!\r\n\r\nNaïve café 😀 résumé.")]
PARITY_TOLERANCE = 1e-4


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
    ok = report["parity_ok"] and tokenizer_ok
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:20} {value}")
        print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1
