"""The number format of the linears' weights: float32, bfloat16 or int8 per output column.

An edit multiplies a handful of rows by every weight of the six linears of every layer, so its
time is that of reading the weights: MiniLM's are 42.5 MB in float32, more than a 32 MB
last-level cache holds between keystrokes, 21 MB in bfloat16 and 10.6 MB in int8.
`round_weights` rounds a model's weights to a format in place, so the torch model (`verify`, the
eval, the GPU) and the compiled path (edits and full passes on the CPU, which stores the same
values in the small format, `engine/compiled.cpp`) compute with the same numbers, and an
incremental state still equals a full pass. Which format vqedit serves is `SERVING`, chosen by
the measurements in MODEL.md; training always uses float32.

In int8 the linears round their inputs too, each row to integers in [−127, 127] times a step of
its own (`INPUT_LEVELS`; ONNX Runtime's dynamic int8 rounds a whole tensor to 256 levels): the
compiled path then multiplies one byte by one byte with AVX-512 VNNI, ~3x the rate of the 22-bit
inputs it took before (three bytes each), and pooled embeddings stayed at a cosine of 0.997
(median) to those of 22-bit inputs (MODEL.md). Torch cannot round bit for bit as the compiled
path does (its norms sum in another order, and a value near a step's midpoint then rounds the
other way), so `verify` checks states against compiled full passes, and tests compare the two
paths at 22 bits (`FINE_LEVELS`), where a row's step is ~2.4e-7 of its largest value and both
agree within 1e-5.

Both small formats also round attention's queries, keys and values to bfloat16 as the model
computes them, in full passes as in edits: an incremental state keeps all three for every token
of every layer, and in bfloat16 they take half the memory and half the reading of the running
update that visits every row at each edit. Rounded in the model rather than only where stored,
they are the same numbers in a full pass and in a state, so exact mode still equals a full pass.
Sums, norms, softmax, head outputs and codebooks stay float32.
"""

import torch

from .model import VQTransformer

FORMATS = ("float32", "bfloat16", "int8")
SERVING = "int8"
INPUT_LEVELS = 127  # int8 format: integer levels either side of zero of an input row
FINE_LEVELS = 2 ** 22 - 1  # the most the compiled path takes (three bytes): float32's resolution


@torch.no_grad()
def round_weights(model: VQTransformer, format: str,
                  input_levels: int = INPUT_LEVELS) -> VQTransformer:
    """Round the q/k/v/output projections' and the MLP's weights to `format`, in place; in
    int8 their inputs to `input_levels` (tests comparing torch with the compiled path take
    `FINE_LEVELS`); queries, keys and values to bfloat16.

    Rounding is idempotent, and a model is only ever rounded further (int8 after bfloat16 is
    int8 of the bfloat16 values); `model.weights` says which format its values fit.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown weight format {format!r}: expected one of {FORMATS}")
    if format == "float32":
        return model
    for block in model.blocks:
        for linear in block.linears().values():
            linear.weight.copy_(rounded(linear.weight, format))
            if format == "int8":
                linear.input_levels = input_levels
        block.attention.qkv_dtype = torch.bfloat16
    model.weights = format
    return model


def rounded(w: torch.Tensor, format: str) -> torch.Tensor:
    """w (O, I) rounded to the format: bfloat16 to nearest even, int8 symmetric per row."""
    if format == "bfloat16":
        return w.bfloat16().float()
    scale = w.abs().amax(1, keepdim=True) / 127  # (O, 1)
    return (w / scale.clamp(min=torch.finfo(w.dtype).tiny)).round().clamp(-127, 127) * scale
