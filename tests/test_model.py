"""The VQ-transformer: parity with `transformers`, virtual positions, the VQ layer, MAC counts."""

import subprocess
import sys

import pytest
import torch

from tests.tiny import tiny_bert, tiny_opt
from vqedit.engine.checkpoint import ModelLoadError, from_hf, load
from vqedit.engine.model import full_pass_macs
from vqedit.lab.corpus import bbc_articles
from vqedit.lab.train.kmeans import fit_codebooks, kmeans

TINY_MODELS = {"bert": tiny_bert, "opt": tiny_opt}


def hf_hidden(hf_model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf_model(input_ids=ids).last_hidden_state


def test_minilm_matches_transformers_on_real_text(minilm):
    text = bbc_articles()[0].text
    ids = torch.tensor([minilm.tokenizer.wrap(minilm.tokenizer.encode(text).ids[:510])])
    with torch.no_grad():
        ours = minilm.model(ids, quantize=False).hidden
    assert ids.shape[1] == 512
    assert (ours - hf_hidden(minilm.hf_model, ids)).abs().max() <= 1e-4


@pytest.mark.parametrize("family", ["bert", "opt"])
@pytest.mark.parametrize("seed,length", [(0, 1), (1, 7), (2, 64)])
def test_tiny_random_models_match_transformers(family, seed, length):
    hf = TINY_MODELS[family](seed)
    ids = torch.randint(3, 1000, (2, length), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ours = from_hf(hf)(ids, quantize=False).hidden
    assert (ours - hf_hidden(hf, ids)).abs().max() <= 1e-4


@pytest.mark.parametrize("family", ["bert", "opt"])
def test_integer_virtual_positions_are_exactly_the_canonical_model(family):
    model = from_hf(TINY_MODELS[family]())
    ids = torch.randint(3, 1000, (1, 20))
    positions = torch.arange(20, dtype=torch.float64).unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(model(ids, positions, quantize=False).hidden,
                           model(ids, quantize=False).hidden)


def test_fractional_positions_interpolate_the_two_nearest_rows():
    table = from_hf(tiny_bert()).position_embedding
    rows = table.weight.detach()
    got = table(torch.tensor([[2.25, 7.0, 62.5]], dtype=torch.float64))[0].detach()
    assert torch.allclose(got[0], 0.75 * rows[2] + 0.25 * rows[3], atol=1e-6)
    assert torch.equal(got[1], rows[7])
    assert torch.allclose(got[2], 0.5 * rows[62] + 0.5 * rows[63], atol=1e-6)


def test_opt_positions_skip_the_two_legacy_rows():
    table = from_hf(tiny_opt()).position_embedding
    got = table(torch.tensor([[0.0, 1.5]], dtype=torch.float64))[0].detach()
    rows = table.weight.detach()
    assert torch.equal(got[0], rows[2])
    assert torch.allclose(got[1], 0.5 * rows[3] + 0.5 * rows[4], atol=1e-6)


@pytest.mark.parametrize("bad", [-0.5, 63.5, 100.0])
def test_positions_outside_the_window_are_refused(bad):
    model = from_hf(tiny_bert())
    with pytest.raises(ValueError, match=r"positions must lie in \[0, 63\]"):
        model(torch.tensor([[5, 6]]), torch.tensor([[0.0, bad]]), quantize=False)


def fitted(family: str, size: int = 16, seed: int = 0, groups: int = 1):
    model = from_hf(TINY_MODELS[family](seed), codebook_size=size, codebook_groups=groups)
    fit_codebooks(model, [torch.randint(3, 1000, (1, 40), generator=torch.Generator()
                                        .manual_seed(seed + i)) for i in range(3)])
    return model


@pytest.mark.parametrize("family", ["bert", "opt"])
@pytest.mark.parametrize("groups", [1, 2, 8])
def test_codes_are_the_nearest_codewords_and_values_are_exactly_codewords(family, groups):
    model = fitted(family, groups=groups)
    ids = torch.randint(3, 1000, (1, 30))
    with torch.no_grad():
        out = model(ids)
    for layer, block in enumerate(model.blocks):
        heads = out.heads[layer][0]  # (T, H, Dh)
        words = block.codebook.codewords.detach()  # (Q, K, Dg)
        slices = heads.reshape(len(heads), -1, words.shape[-1])  # (T, Q, Dg) head by head
        brute = ((slices.unsqueeze(2) - words.unsqueeze(0)) ** 2).sum(-1).argmin(-1)  # (T, Q)
        assert torch.equal(out.codes[layer, 0], brute)
        q = block.codebook(heads.unsqueeze(0))
        chosen = words[torch.arange(words.shape[0]), brute]  # (T, Q, Dg)
        assert torch.equal(q.values[0], chosen.reshape(heads.shape))


@pytest.mark.parametrize("groups", [0, 3, 16])
def test_groups_that_do_not_divide_a_head_are_refused(groups):
    with pytest.raises(ValueError, match="codebook_groups must divide the head width 8"):
        from_hf(tiny_bert(), codebook_groups=groups)


def test_a_codebook_holding_every_head_output_reproduces_the_dense_model():
    # With a codeword at every head output, quantizing changes nothing: the VQ sits exactly on
    # the head outputs, before the output projection.
    model = from_hf(tiny_bert(), codebook_size=64)
    ids = torch.randint(3, 1000, (1, 12))
    fit_codebooks(model, [ids])
    with torch.no_grad():
        assert (model(ids).hidden - model(ids, quantize=False).hidden).abs().max() <= 1e-5


def test_straight_through_gradient():
    model = fitted("bert")
    codebook = model.blocks[0].codebook
    x = torch.randn(1, 5, 4, 8, requires_grad=True)  # (B, T, H, Dh)
    q = codebook(x)
    assert torch.equal(q.values, codebook.lookup(q.codes)), "the value is the codeword"
    q.values.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x)), "the gradient passes straight through"


def test_an_unfitted_codebook_refuses_to_quantize():
    model = from_hf(tiny_bert())
    assert not model.quantizable
    with pytest.raises(RuntimeError, match="never fitted"):
        model(torch.tensor([[5, 6, 7]]))


def test_kmeans_finds_well_separated_clusters():
    gen = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(50, 2, generator=gen) for c in centers])
    found = kmeans(x, 4)
    assert torch.cdist(centers, found).min(1).values.max() < 0.1


@pytest.mark.parametrize("family", ["bert", "opt"])
@pytest.mark.parametrize("quantized", [False, True])
@pytest.mark.parametrize("t", [1, 17, 64])
def test_mac_counter_equals_the_analytic_formula(family, quantized, t):
    model = fitted(family)
    model.counter.reset()
    with torch.no_grad():
        model(torch.randint(3, 1000, (1, t)), quantize=quantized)
    assert model.counter.reset() == full_pass_macs(model.config, t, quantized)


def test_minilm_mac_count_matches_the_formula(minilm):
    minilm.model.counter.reset()
    with torch.no_grad():
        minilm.model(torch.randint(1000, 2000, (1, 128)), quantize=False)
    assert minilm.model.counter.reset() == full_pass_macs(minilm.model.config, 128, False)


def test_unknown_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="neither a local model directory"):
        load(tmp_path / "nothing-here")
    with pytest.raises(ModelLoadError, match="neither a local model directory"):
        load(tmp_path)


@pytest.mark.parametrize("family", ["bert", "opt"])
def test_a_directory_read_without_transformers_models_gives_the_same_model(family, tmp_path):
    """`load(reference=False)` (the daemon's, seconds faster) reads config, safetensors and
    tokenizer.json itself: the same weights and the same tokens as the `transformers` path."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from tests.tiny import byte_level_bpe
    from vqedit.engine.checkpoint import default_model_path

    (tiny_bert() if family == "bert" else tiny_opt()).save_pretrained(tmp_path)
    if family == "bert":
        AutoTokenizer.from_pretrained(default_model_path()).save_pretrained(tmp_path)
    else:
        PreTrainedTokenizerFast(tokenizer_object=byte_level_bpe(), bos_token="</s>",
                                eos_token="</s>", unk_token="<unk>",
                                pad_token="<pad>").save_pretrained(tmp_path)
    direct, reference = load(tmp_path, reference=False), load(tmp_path)
    assert direct.hf_model is None and reference.hf_model is not None
    ours, theirs = direct.model.state_dict(), reference.model.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)
    texts = [a.text[:500] for a in bbc_articles()[:20]] + ["naïve café 😀 \n\n don't"]
    assert all(direct.tokenizer.encode(t) == reference.tokenizer.encode(t) for t in texts)
    assert (direct.tokenizer.prefix, direct.tokenizer.suffix) == \
        (reference.tokenizer.prefix, reference.tokenizer.suffix)


def test_the_daemon_loads_the_shipped_model_without_importing_transformers():
    # Importing transformers took ~1.6 s of the daemon's ~2.6 s cold load.
    probe = ("import sys\nfrom vqedit.engine.checkpoint import load_default\n"
             "load_default(reference=False)\nprint('transformers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.splitlines()[-1] == "False", done.stderr[-2000:]
