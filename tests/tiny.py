"""Small real models and tokenizers built locally: no weights can be downloaded here.

Tiny random BERT and OPT models come from `transformers` configs; the byte-level BPE tokenizer
(the kind OPT and GPT-2 use) is trained with `tokenizers` on BBC articles in well under a second.
"""

import tokenizers
import torch
from tokenizers import decoders, models, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertModel, OPTConfig, OPTModel

from vqedit.lab.corpus import bbc_articles

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64)


def tiny_bert(seed: int = 0, vocab_size: int = 30522) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, intermediate_size=64, hidden_act="gelu", **TINY)
    return BertModel(config, add_pooling_layer=False).eval()


def tiny_opt(seed: int = 0, vocab_size: int = 1000) -> OPTModel:
    torch.manual_seed(seed)
    config = OPTConfig(vocab_size=vocab_size, ffn_dim=64, word_embed_proj_dim=32, **TINY)
    return OPTModel(config).eval()


def byte_level_bpe(vocab_size: int = 1000) -> tokenizers.Tokenizer:
    """A GPT-2-style tokenizer: byte-level pre-tokens, BPE merges, </s> prepended like OPT's."""
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((a.text for a in bbc_articles()[:300]), trainer)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="</s> $A", special_tokens=[("</s>", 2)]),
    ])
    return tok
