"""A tiny model on disk and private daemon directories, for tests that run the real daemon.

The daemon is started the way users get it: a `DaemonClient` spawns `vqedit daemon run` as a
separate process, which listens on a real Unix socket under a private XDG_RUNTIME_DIR.
"""

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer

from tests.tiny import tiny_bert
from tests.vq import tiny_vq
from vqedit.daemon import protocol as wire
from vqedit.daemon.client import DaemonClient
from vqedit.engine import student
from vqedit.engine.checkpoint import default_model_path, from_hf, load
from vqedit.engine.heads import LinearHead
from vqedit.engine.incremental import IncrementalEngine
from vqedit.engine.live import LiveDocument
from vqedit.engine.mode import Mode
from vqedit.engine.weights import SERVING
from vqedit.lab.private_daemon import private_daemon_dirs

LABELS = ["alpha", "beta", "gamma"]
PROSE = ("The council voted on the new budget last night.\n\n"
         "Local teams played a late match in the rain, and the crowd stayed to the end.\n\n"
         "A new phone was announced with a faster chip and a larger screen than before.")


@dataclass(frozen=True)
class TinyModel:
    base: Path  # a tiny random BERT with the MiniLM tokenizer
    student: Path  # its k-means codebooks as a student file
    head: Path  # a random three-label head

    def daemon_args(self, *extra: str) -> list[str]:
        return ["--model", str(self.base), "--student", str(self.student), "--head",
                str(self.head), "--threads", "1", *extra]


def make_tiny_model(root: Path, head_seed: int = 0, labels: list[str] = LABELS) -> TinyModel:
    base = root / "tiny-bert"
    tiny_bert().save_pretrained(base)
    AutoTokenizer.from_pretrained(default_model_path()).save_pretrained(base)
    student.save(tiny_vq("bert"), from_hf(tiny_bert()), root / "student.safetensors",
                 {"made_by": "tests"})
    write_head(root / "head.safetensors", labels, head_seed)
    return TinyModel(base, root / "student.safetensors", root / "head.safetensors")


def write_head(path: Path, labels: list[str], seed: int) -> None:
    """Write a head by rename, as careful writers do (the watcher must see it)."""
    prototypes = torch.randn(len(labels), 32, generator=torch.Generator().manual_seed(seed))
    partial = path.with_suffix(".partial")
    LinearHead.from_prototypes(labels, prototypes).save(partial)
    os.replace(partial, path)


def write_float64_head(path: Path) -> None:
    """The head at `path` again in float64: it loads (labels and shapes are right) and raises
    in its matrix product with the model's float32 embeddings, so every pass it scores fails."""
    head = LinearHead.load(path)
    partial = path.with_suffix(".partial")
    LinearHead(head.labels, head.weight.to(torch.float64), head.bias.to(torch.float64)
               ).save(partial)
    os.replace(partial, path)


def replace_file(path: Path, data: bytes) -> None:
    """Write by rename, as careful writers do: a reader of the old file keeps its bytes."""
    partial = path.with_suffix(".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


class Expected:
    """Results of a fresh exact pass in this process: what compacted daemon results must equal."""

    def __init__(self, model: TinyModel) -> None:
        loaded = load(str(model.base), model.student, SERVING)  # as the daemon loads it
        self.engine = IncrementalEngine(loaded.model, Mode())
        self.tokenizer = loaded.tokenizer
        self.head = LinearHead.load(model.head)

    def __call__(self, text: str, labels: dict[str, str] | None = None,
                 ) -> tuple[str, dict[str, float], list[str]]:
        """(label, scores, paragraph labels) from the head, or from zero-shot `labels`."""
        with torch.no_grad():
            head = self.head if labels is None else LinearHead.from_prototypes(
                list(labels), torch.stack([self._live(d).embedding() for d in labels.values()]))
            live = self._live(text)
            found = head.classify(live.embedding())
            paragraphs = [head.classify(e).label for e in live.segment_embeddings()]
        return found.label, found.scores, paragraphs

    def _live(self, text: str) -> LiveDocument:
        return LiveDocument(self.engine, self.tokenizer, text)


def assert_matches(results: wire.Results, expected: tuple[str, dict[str, float], list[str]]):
    label, scores, paragraphs = expected
    assert results.exact
    assert results.label == label
    assert results.scores.keys() == scores.keys()
    for name, score in scores.items():
        assert abs(results.scores[name] - score) < 1e-4, (name, results.scores, scores)
    assert [p.label for p in results.paragraphs] == paragraphs


# XDG directories of our own, the daemon started there stopped at the end: what benchmarks use.
private_dirs = private_daemon_dirs


def wait_until(condition, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def wait_exact(client: DaemonClient, uri: str, version: int) -> wire.Results:
    """Results for exactly `version` after idle compaction."""
    return wait_until(lambda: (r := client.latest(uri)) is not None and r.version == version
                      and r.exact and r, what=f"exact results of {uri} v{version}")


class RawConnection:
    """A bare socket speaking frames, for what the client library would never send."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(str(path))
        self.next_id = 0
        self.notifications: list[dict] = []  # pushed while we waited for a response

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str, params: dict) -> dict:
        self.next_id += 1
        self.sock.sendall(wire.encode({"id": self.next_id, "method": method, "params": params}))
        return self.reply()

    def reply(self) -> dict | None:
        """The next response (notifications put aside); None when the daemon closed us."""
        while True:
            message = self.receive()
            if message is None or "id" in message:
                return message
            self.notifications.append(message)

    def notification(self) -> dict:
        """The next pushed notification, one put aside first."""
        while not self.notifications:
            message = self.receive()
            assert message is not None, "the daemon closed the connection"
            self.notifications.append(message)
        return self.notifications.pop(0)

    def receive(self) -> dict | None:
        try:
            payload = wire.recv_frame(self.sock)
        except ConnectionError:
            return None
        return None if payload is None else wire.decode(payload)

    def hello(self) -> dict:
        return self.request("hello", {"protocol": wire.PROTOCOL_VERSION, "client": "raw"})

    def close(self) -> None:
        self.sock.close()
