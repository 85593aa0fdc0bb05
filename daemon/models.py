"""The model every document shares: weights, codebooks, tokenizer and head, loaded once, and
the zero-shot heads made with it.

Only the inference worker (worker.py) loads, uses and drops a `SharedModel`; sessions never see
it. It is immutable once built: a reload builds a new one and the worker switches over. Other
threads only read `Models.model` and `Models.error` (for stats and the status line).
"""

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from vqedit.engine.allocator import release_freed_memory
from vqedit.engine.checkpoint import ModelLoadError, load, load_default
from vqedit.engine.heads import DEFAULT_HEAD, LinearHead
from vqedit.engine.incremental import IncrementalEngine
from vqedit.engine.live import LiveDocument
from vqedit.engine.tokens import Tokenizer
from vqedit.engine.weights import SERVING

from .memory import too_small
from .protocol import LabelDescriptions
from .settings import Settings

log = logging.getLogger("vqedit.daemon")

LABEL_HEADS = 16  # zero-shot heads kept per model; editors mostly share one label set


@dataclass(frozen=True)
class SharedModel:
    engine: IncrementalEngine  # the VQ model in the daemon's mode; used by the worker only
    tokenizer: Tokenizer
    head: LinearHead
    name: str  # base and student, for stats and the log
    head_path: Path
    device: torch.device


def pick_device(setting: str) -> torch.device:
    """auto: the GPU when there is one, else the CPU."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda, but torch sees no CUDA device")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def placed(device: torch.device) -> contextlib.AbstractContextManager:
    """Makes the engine's new tensors land on the model's device.

    `torch.device` as a context is a function mode that every torch call passes through in
    Python: +12 ms CPU on a 38 ms edit of a 512-token segment, measured. Tensors land on the
    CPU by default, so there it is left out.
    """
    return contextlib.nullcontext() if device.type == "cpu" else torch.device(device)


def load_shared(settings: Settings) -> SharedModel:
    """Load what `settings` names; raises ModelLoadError with the reason."""
    if settings.student is not None:
        loaded = load(settings.model, settings.student, SERVING, reference=False)
    elif settings.model is not None:
        raise ModelLoadError("the daemon needs a model with codebooks: give --student with "
                             "--model (a dense model cannot be updated incrementally)")
    else:
        loaded = load_default(reference=False)
    head_path = settings.head or DEFAULT_HEAD
    try:
        head = LinearHead.load(head_path)
    except ValueError as e:
        raise ModelLoadError(f"cannot load the head: {e}") from None
    width = loaded.model.config.d_model
    if head.weight.shape[1] != width:
        raise ModelLoadError(f"the head {head_path} expects embeddings of size "
                             f"{head.weight.shape[1]}, the model gives {width}")
    device = pick_device(settings.device)
    model = loaded.model.to(device)
    head = LinearHead(head.labels, head.weight.to(device), head.bias.to(device))
    return SharedModel(IncrementalEngine(model, settings.mode), loaded.tokenizer, head,
                       loaded.description, head_path, device)


class Models:
    """The worker's model: loaded at start and when first needed after an idle unload, loaded
    anew on a reload, and the zero-shot heads made with it, newest last."""

    def __init__(self, loader: Callable[[Settings], SharedModel] = load_shared) -> None:
        self._loader = loader
        self.model: SharedModel | None = None
        self.error: str | None = None  # why the last load failed
        self._label_heads: OrderedDict[tuple[tuple[str, str], ...], LinearHead] = OrderedDict()

    def load(self, settings: Settings) -> SharedModel | None:
        """Load the model for `settings`; on failure keep what there is and record why."""
        try:
            started = time.monotonic()
            model = self._loader(settings)
        except (ModelLoadError, ValueError, OSError, RuntimeError) as e:
            self.error = str(e)
            log.error("model load failed: %s", e)
            return None
        except Exception as e:  # any other kind too: the worker must live to report it
            self.error = f"the model could not load ({type(e).__name__}: {e})"
            log.exception("model load failed")
            return None
        refused = too_small(settings.memory_mb, model.engine, model.name)
        if refused is not None:
            self.error = refused
            log.error("model refused: %s", refused)
            return None
        log.info("loaded %s on %s in %.1f s (%s)", model.name, model.device,
                 time.monotonic() - started, settings.mode_name)
        self.model, self.error = model, None
        self._label_heads.clear()
        return model

    def current(self, settings: Settings) -> SharedModel | None:
        """The loaded model, loading it again after an idle unload (not after a failure)."""
        if self.model is None and self.error is None:
            self.load(settings)
        return self.model

    def unload(self) -> None:
        """Give the memory back (the documents' states must be dropped first)."""
        self.model = None
        self._label_heads.clear()
        release_freed_memory()  # the process keeps freed memory for reuse (engine/allocator.py)

    def head(self, model: SharedModel, labels: LabelDescriptions | None) -> LinearHead:
        """The model's head, or one whose prototypes are the label descriptions' embeddings."""
        if labels is None:
            return model.head
        key = tuple(labels.items())
        head = self._label_heads.get(key)
        if head is None:
            prototypes = torch.stack([LiveDocument(model.engine, model.tokenizer, text).embedding()
                                      for text in labels.values()])  # (N, D)
            head = self._label_heads[key] = LinearHead.from_prototypes(list(labels), prototypes)
            while len(self._label_heads) > LABEL_HEADS:
                self._label_heads.popitem(last=False)
        self._label_heads.move_to_end(key)
        return head
