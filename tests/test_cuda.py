"""On a GPU the engine, the daemon and training keep the invariants they keep on the CPU.

Every test here needs a CUDA device and is skipped without one (CI has none); on a GPU machine
run `pytest tests/test_cuda.py`. The engine puts new tensors on the model's device through a
`torch.device` context, as the daemon does (daemon/models.py: `placed`), so a tensor made
without it lands on the CPU and the first mixed operation fails: these tests find such places.
"""

import copy
import json
import random

import pytest
import torch
from hypothesis import given, settings

from tests.daemon_harness import PROSE, assert_matches, private_dirs, wait_exact
from tests.test_incremental import TINY_VOCAB, TINY_WINDOW, token_edits
from tests.test_train_distill import distill
from tests.vq import check_incremental, tiny_vq
from vqedit.daemon.client import DaemonClient
from vqedit.engine.checkpoint import load_default
from vqedit.engine.heads import DEFAULT_HEAD, LinearHead
from vqedit.engine.incremental import IncrementalEngine
from vqedit.engine.live import LiveDocument
from vqedit.engine.mode import Mode
from vqedit.lab.corpus import bbc_articles
from vqedit.lab.edits.atomic import KINDS, random_edit
from vqedit.text.edit import Edit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
GPU = torch.device("cuda")


@pytest.fixture(scope="module", params=[("bert", 1), ("opt", 4)], ids=["bert", "opt-4-groups"])
def tiny_gpu(request):
    family, groups = request.param
    return tiny_vq(family, codebook_groups=groups).to(GPU)


@given(case=token_edits(TINY_VOCAB, TINY_WINDOW, 12))
@settings(max_examples=25)
def test_exact_mode_equals_a_full_pass_on_the_gpu(tiny_gpu, case):
    with GPU:
        state = check_incremental(IncrementalEngine(tiny_gpu), *case)
    assert state.layers[-1].k.is_cuda and state.total.is_cuda


@given(case=token_edits(TINY_VOCAB, TINY_WINDOW, 12))
@settings(max_examples=25)
def test_sticky_mode_reproduces_a_forced_pass_on_the_gpu(tiny_gpu, case):
    with GPU:
        check_incremental(IncrementalEngine(tiny_gpu, Mode(delta=2.0, sweep=2)), *case)


def test_the_shipped_student_gives_the_same_embeddings_and_labels_on_gpu_and_cpu():
    """Exact mode on both devices, the same 40 atomic edits to a BBC article."""
    loaded = load_default()
    head = LinearHead.load(DEFAULT_HEAD)
    cpu = LiveDocument(IncrementalEngine(loaded.model), loaded.tokenizer, bbc_articles()[7].text)
    with GPU:
        gpu = LiveDocument(IncrementalEngine(copy.deepcopy(loaded.model).to(GPU)),
                           loaded.tokenizer, cpu.text)
    rng = random.Random(0)
    vocabulary = sorted({w for a in bbc_articles()[:50] for w in a.text.split() if w.isalpha()})
    with torch.no_grad():
        for _ in range(40):
            edit = random_edit(cpu.text, rng, KINDS, vocabulary)
            cpu.apply(edit)
            with GPU:
                gpu.apply(edit)
                on_gpu = gpu.embedding()
            assert on_gpu.is_cuda
            on_cpu, on_gpu = cpu.embedding().double(), on_gpu.cpu().double()
            assert torch.cosine_similarity(on_cpu, on_gpu, dim=0) > 0.9999
            assert head.classify(on_cpu.float()).label == head.classify(on_gpu.float()).label


def test_a_daemon_on_the_gpu_sends_the_results_of_an_exact_cpu_pass(tiny, expected):
    with private_dirs() as paths:
        args = tiny.daemon_args("--device", "cuda", "--compact-after-s", "0.3")
        with DaemonClient(daemon_args=args, paths=paths) as client:
            client.open("doc", PROSE, 1)
            client.change("doc", 2, [Edit(0, 3, "A"), Edit(2, 9, "city")])
            assert_matches(wait_exact(client, "doc", 2), expected(client.text("doc")))
            assert client.stats()["device"].startswith("cuda")
            client.shutdown()


def test_distillation_trains_on_the_gpu_and_saves_a_student(opt_base, tmp_path):
    run = distill(opt_base, tmp_path, "--steps", "3")
    report = json.loads(run.stdout.decode().splitlines()[-1])
    assert report["steps"] == 3 and report["bytes"] > 0 and report["device"] == "cuda"
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
