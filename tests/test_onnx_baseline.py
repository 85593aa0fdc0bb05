"""The benchmarks' dense baselines: a base model exported to ONNX (fp32 and int8), cached; and
the paragraph cache that `vqedit replay` compares with."""

import pytest
import torch

from tests.tiny import tiny_bert, tiny_opt
from vqedit.lab.bench import onnx_baseline
from vqedit.lab.bench.paragraph_cache import ParagraphCache, SizeCosts

NEEDS = "the ONNX baselines need the `bench` extra (pip install -e '.[bench]')"
pytest.importorskip("onnxruntime", reason=NEEDS)
onnx = pytest.importorskip("onnx", reason=NEEDS)

WINDOW = 64  # the tiny models' max_position_embeddings


@pytest.mark.parametrize("make", [tiny_bert, tiny_opt], ids=["bert", "opt"])
def test_the_fp32_export_matches_torch_at_any_length_and_the_int8_one_runs(tmp_path, make):
    model = make()
    exported = onnx_baseline.export(model, "tiny", WINDOW, tmp_path)
    fp32 = onnx_baseline.Dense(exported.fp32, threads=1)
    int8 = onnx_baseline.Dense(exported.int8, threads=1)
    for tokens in (2, 5, 33, WINDOW):  # the traced length is 16: the axis must be dynamic
        ids = torch.randint(0, model.config.vocab_size, (1, tokens))
        with torch.no_grad():
            expected = model(input_ids=ids).last_hidden_state  # (1, T, D)
        assert torch.from_numpy(fp32(ids.numpy())) == pytest.approx(expected, abs=1e-4)
        quantized = torch.from_numpy(int8(ids.numpy()))
        assert quantized.shape == expected.shape and quantized.isfinite().all()
    graph = onnx.load(exported.int8, load_external_data=False).graph
    linear = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert [n.op_type for n in graph.node].count("MatMulInteger") == linear  # all quantized


def test_the_export_is_cached_per_model_and_reused(tmp_path, monkeypatch):
    first = onnx_baseline.export(tiny_bert(), "tiny", WINDOW, tmp_path)
    assert first.built and first.meta["fp32_max_abs_diff"] <= 1e-4

    def no_export(*args, **kwargs):
        raise AssertionError("exported again: the cache was not used")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    again = onnx_baseline.export(tiny_bert(), "tiny", WINDOW, tmp_path)
    assert (again.built, again.folder) == (False, first.folder)
    other = onnx_baseline.cache_key(tiny_bert(seed=1), "tiny")
    assert other != first.folder.name  # other weights, another export


def test_a_paragraph_cache_recomputes_only_the_paragraphs_an_edit_touched(wordpiece):
    tokenizer = wordpiece
    cache = ParagraphCache(tokenizer, 512, blank_markdown=True)
    text = "The striker scored twice.\n\nThe minister resigned on Monday.\n"
    cache.open("u", text, "markdown")
    edited = text.replace("Monday", "Tuesday")
    second = len(tokenizer.wrap(tokenizer.encode("The minister resigned on Tuesday.").ids))
    assert cache.change("u", edited) == [second]
    assert cache.change("u", edited) == []  # nothing changed: nothing recomputed
    assert cache.change("u", "Intro.\n\n" + edited) == [len(tokenizer.wrap(
        tokenizer.encode("Intro.").ids))]  # the others only moved
    assert cache.change("u", "Intro.\n\n" + edited + "\n```\ncode here\n```\n") == []


def test_size_costs_interpolate_between_the_lengths_timed():
    costs = SizeCosts([8, 16, 64], [1.0, 2.0, 8.0])
    assert (costs(4), costs(12), costs(40), costs(64)) == (1.0, 1.5, 5.0, 8.0)
