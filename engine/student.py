"""A distilled student on disk: only the tensors that differ from its base model, in fp16.

The base weights already ship in their own package, so a student file holds the codebooks and
the parameters distillation changed (the token embeddings stay frozen and are left out). The
file's metadata carries the student's config, which must match the base it is applied to.
"""

import json
from dataclasses import asdict
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from .model import VQConfig, VQTransformer

FORMAT = "vqedit-student-1"


class StudentError(ValueError):
    """The file is not a vqedit student, or not one for this base model."""


def save(student: VQTransformer, base: VQTransformer, path: Path,
         metadata: dict[str, str]) -> int:
    """Write the student's differences from `base`; returns the file size in bytes."""
    base_params = dict(base.named_parameters())
    tensors = {name: p.detach().to(torch.float16).cpu().contiguous()
               for name, p in student.named_parameters()
               if ".codebook." in name or not torch.equal(p.detach().cpu(),
                                                          base_params[name].detach().cpu())}
    meta = {**metadata, "format": FORMAT, "config": json.dumps(asdict(student.config))}
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(tensors, str(path), metadata=meta)
    return path.stat().st_size


def metadata(path: Path) -> dict[str, str]:
    """The student file's metadata (format, config and how it was made)."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (OSError, safetensors.SafetensorError) as e:
        raise StudentError(f"{path} is not a vqedit student: {e}") from None
    if meta.get("format") != FORMAT:
        raise StudentError(f"{path} is not a vqedit student (format {meta.get('format')!r})")
    return meta


def apply(base: VQTransformer, path: Path) -> VQTransformer:
    """A new model: `base`'s weights with the student's tensors on top, codebooks fitted."""
    config = _config(path)
    own = {"codebook_size": 0, "codebook_groups": 0}  # the student's own choices
    if {**asdict(config), **own} != {**asdict(base.config), **own}:
        raise StudentError(f"{path} was distilled from a different base model "
                           f"({config}) than the one loaded ({base.config})")
    model = VQTransformer(config)
    own = {name: t for name, t in base.state_dict().items() if ".codebook." not in name}
    model.load_state_dict(own, strict=False)
    tensors = safetensors.torch.load_file(str(path))
    params = dict(model.named_parameters())
    unknown = set(tensors) - set(params)
    missing = {name for name in params if ".codebook." in name} - set(tensors)
    if unknown or missing:
        raise StudentError(f"{path}: unexpected tensors {sorted(unknown)}, "
                           f"missing codebooks {sorted(missing)}")
    with torch.no_grad():
        for name, tensor in tensors.items():
            if params[name].shape != tensor.shape:
                raise StudentError(f"{path}: {name} has shape {tuple(tensor.shape)}, "
                                   f"expected {tuple(params[name].shape)}")
            params[name].copy_(tensor.float())
        for block in model.blocks:
            block.codebook.fitted.fill_(True)
    return model.eval()


def _config(path: Path) -> VQConfig:
    """The student's config from its metadata; anything but VQConfig's fields is refused."""
    try:
        fields = json.loads(metadata(path).get("config", "null"))
        if not isinstance(fields, dict):
            raise TypeError(f"expected an object, got {type(fields).__name__}")
        return VQConfig(**fields)
    except (ValueError, TypeError) as e:
        raise StudentError(f"{path} has no valid student config: {e}") from None
