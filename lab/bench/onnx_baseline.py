"""Dense baselines in ONNX Runtime, fp32 and int8, for `vqedit bench engine` and `vqedit replay`.

Why: the incremental engine has to beat what one would deploy to recompute a paragraph, not
only eager torch: the same base model exported to ONNX and run by ONNX Runtime, in fp32 and with
its weights dynamically quantized to int8 (`quantize_dynamic`, QInt8 weights per output
channel: per tensor, all-MiniLM-L6-v2's pooled output kept a cosine of 0.84 to fp32 at 512
tokens, per channel 0.99, at the same speed).

Export uses torch's dynamo exporter (it needs `onnxscript`); the TorchScript exporter traced
transformers 5's attention masks at the example's length and gave wrong outputs at others. The
sequence axis is dynamic, from 2 tokens to the model's window. Export and quantization take
seconds, so both files are cached under `build/onnx/<key>/`, the key a hash of the model's
config and weights and of the torch, transformers and onnxruntime versions that made them; later
runs reuse them. Nothing is downloaded: the model exported is the one already loaded.

ONNX Runtime is a benchmark dependency (the `bench` extra), never a runtime one: this module
imports it only when called, and `unavailable()` says in one line why it cannot be.

Usage:
    exported = export(loaded.hf_model, loaded.name, window)  # cached under build/onnx/
    fp32, int8 = Dense(exported.fp32, threads), Dense(exported.int8, threads)
    hidden = int8(ids)                                       # (1, T) int64 → (1, T, D)

Shapes: T tokens, D the model's width.
"""

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import inspect
import json
import logging
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

BUILD = Path("build") / "onnx"  # under the working directory, beside `make demo`'s build/demo
INPUT, OUTPUT = "input_ids", "hidden"
REQUIRED = ("onnxruntime", "onnx", "onnxscript")  # the `bench` extra
VERSIONED = ("torch", "transformers", "onnxruntime", "onnx", "onnxscript")  # part of the key
EXAMPLE_TOKENS = 16  # the length the exporter traces; the axis stays dynamic
PARITY_TOKENS = (7, 40)  # lengths other than the traced one at which fp32 must match torch
FP32_TOLERANCE = 1e-3  # max |ONNX fp32 - torch| over the hidden states, or the export is refused
INT8 = "dynamic quantization, QInt8 weights per output channel (onnxruntime quantize_dynamic)"


class OnnxError(Exception):
    """The model could not be exported or quantized; the message says why, in one line."""


def unavailable() -> str | None:
    """Why the ONNX baselines cannot run here (a package of the `bench` extra is missing), or
    None when they can."""
    missing = [name for name in REQUIRED if importlib.util.find_spec(name) is None]
    if missing:
        return (f"{', '.join(missing)} not installed: the ONNX Runtime baselines need the "
                "`bench` extra (pip install -e '.[bench]')")
    return None


def version() -> str:
    """The installed onnxruntime's version, for reports."""
    return importlib.metadata.version("onnxruntime")


@dataclass(frozen=True)
class Exported:
    folder: Path  # build/onnx/<key>/
    built: bool  # exported and quantized by this call; False: found in the cache
    meta: dict[str, Any]  # meta.json: the model, the versions, fp32 parity and int8 cosine

    @property
    def fp32(self) -> Path:
        return self.folder / "model.onnx"  # its weights beside it, in model.onnx.data

    @property
    def int8(self) -> Path:
        return self.folder / "model-int8.onnx"


def cache_key(hf_model: nn.Module, name: str) -> str:
    """The model's name and a hash of its config, its weights (names, shapes, dtypes, bytes)
    and the versions of the tools that export and quantize it."""
    digest = hashlib.sha256(hf_model.config.to_json_string(use_diff=False).encode())
    for package in VERSIONED:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            digest.update(f"{package}=={importlib.metadata.version(package)}\n".encode())
    for key, tensor in sorted(hf_model.state_dict().items()):
        digest.update(f"{key} {tuple(tensor.shape)} {tensor.dtype}\n".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '-', name)}-{digest.hexdigest()[:16]}"


def export(hf_model: nn.Module, name: str, window: int, root: Path = BUILD) -> Exported:
    """The model's fp32 and int8 ONNX files under `root/<key>/`, made on the first call for
    this model (about 10 s for all-MiniLM-L6-v2) and found there on later ones.

    Concurrent first calls each build in a folder of their own and the first to finish wins
    the rename, so no caller sees a half-written cache. Raises `OnnxError` when a package is
    missing, the exporter fails, or the fp32 export disagrees with torch.
    """
    folder = root / cache_key(hf_model, name)
    if (folder / "meta.json").is_file():
        return Exported(folder, False, json.loads((folder / "meta.json").read_text()))
    reason = unavailable()
    if reason:
        raise OnnxError(reason)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=root))
    try:
        started = time.perf_counter()
        built = Exported(staging, True, {})
        _export_fp32(hf_model, built.fp32, window, name)
        _quantize(built.fp32, built.int8)
        meta = {"model": name, "window": window, "int8": INT8,
                "versions": {p: importlib.metadata.version(p) for p in VERSIONED},
                **_parity(hf_model, built, name, window),
                "build_s": round(time.perf_counter() - started, 1)}
        (staging / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        staging.chmod(0o755)  # mkdtemp's folder is private; the cache is not
        with contextlib.suppress(OSError):  # another process cached the same model first
            staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not (folder / "meta.json").is_file():
        raise OnnxError(f"{folder} exists but holds no meta.json: remove it and run again")
    return Exported(folder, True, json.loads((folder / "meta.json").read_text()))


class Dense:
    """One ONNX Runtime session on the CPU: dense passes over token ids.

    `threads` intra-op threads and one inter-op thread, as torch runs with `--threads`; idle
    pool threads do not spin, so that they take no CPU from the measurements that follow
    theirs in the same process.
    """

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = path
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        """Final hidden states: ids (1, T) int64 → (1, T, D) float32."""
        return self.session.run([OUTPUT], {INPUT: ids})[0]

    def time_ms(self, ids: np.ndarray) -> float:
        """Milliseconds of one dense pass over `ids` (1, T)."""
        start = time.perf_counter()
        self(ids)
        return (time.perf_counter() - start) * 1000


class _LastHidden(nn.Module):
    """The base model as a function of token ids alone, as the benchmarks' torch pass calls it:
    (1, T) → (1, T, D), no key/value cache (OPT) and no pooler."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        takes_cache = "use_cache" in inspect.signature(model.forward).parameters
        self.options = {"use_cache": False} if takes_cache else {}

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, **self.options).last_hidden_state  # (1, T, D)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's and the quantizer's warnings and progress logs are not the user's
    concern: they would interleave with a benchmark's progress bar."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def _sample(hf_model: nn.Module, tokens: int) -> torch.Tensor:
    """Fixed token ids (1, T) from the whole vocabulary (a seeded generator)."""
    generator = torch.Generator().manual_seed(tokens)
    return torch.randint(0, hf_model.config.vocab_size, (1, tokens), generator=generator)


def _export_fp32(hf_model: nn.Module, path: Path, window: int, name: str) -> None:
    tokens = torch.export.Dim("tokens", min=2, max=window)
    example = _sample(hf_model, min(EXAMPLE_TOKENS, window))
    try:
        with _quiet(), torch.no_grad():
            torch.onnx.export(_LastHidden(hf_model).eval(), (example,), str(path),
                              input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_shapes=({1: tokens},), dynamo=True, verbose=False,
                              external_data=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise OnnxError(f"cannot export {name} ({hf_model.config.model_type}) to ONNX: "
                        f"{type(e).__name__}: {first[:300]}") from e


def _quantize(fp32: Path, int8: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, per_channel=True)


def _parity(hf_model: nn.Module, exported: Exported, name: str, window: int) -> dict[str, float]:
    """fp32 against torch at lengths other than the traced one (the axis must be dynamic), and
    the int8 model's pooled output's cosine to torch's, for the record."""
    fp32, int8 = Dense(exported.fp32, 1), Dense(exported.int8, 1)
    worst, cosines = 0.0, []
    for tokens in sorted({min(t, window) for t in PARITY_TOKENS}):
        ids = _sample(hf_model, tokens)  # (1, T)
        with torch.no_grad():
            expected = _LastHidden(hf_model)(ids).numpy()  # (1, T, D)
        worst = max(worst, float(np.abs(fp32(ids.numpy()) - expected).max()))
        pooled, reference = int8(ids.numpy()).mean(1)[0], expected.mean(1)[0]  # (D,)
        cosines.append(float(pooled @ reference
                             / (np.linalg.norm(pooled) * np.linalg.norm(reference))))
    if worst > FP32_TOLERANCE:
        raise OnnxError(f"the ONNX export of {name} differs from torch by {worst:.2g} "
                        f"(more than {FP32_TOLERANCE:g})")
    return {"fp32_max_abs_diff": worst, "int8_pooled_cosine_min": round(min(cosines), 4)}
