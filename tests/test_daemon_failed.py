"""A pass that fails is reported to its client at once, and costs nobody else anything.

On the real process and socket (tests/daemon_harness). The failures are real, not mocked:
- a head file replaced on disk by one that loads (right labels, right shapes) but whose
  weights are float64: the daemon reloads it, and every pass scored by it raises in the
  head's matrix product (float32 embeddings); documents scored by zero-shot labels never
  touch that head;
- a head file that is not a head, and student files that are not students (a config with an
  unknown field, a null config, a pickle): no model loads, so no pass can run at all.
"""

import json
import pickle

import pytest
import safetensors
import safetensors.torch

from tests.daemon_harness import (
    LABELS,
    PROSE,
    Expected,
    assert_matches,
    make_tiny_model,
    private_dirs,
    replace_file,
    wait_until,
    write_float64_head,
    write_head,
)
from vqedit.daemon import protocol as wire
from vqedit.daemon.client import DaemonClient, DaemonError
from vqedit.text.edit import Edit

ZERO_SHOT = {"money": "The budget, taxes and the economy.",
             "games": "Teams playing a match in front of a crowd."}
WAIT_S = 60.0  # far beyond a tiny model's pass: a failure must come long before it


def test_a_failing_pass_is_reported_for_its_version_and_the_next_change_recovers(tmp_path):
    tiny = make_tiny_model(tmp_path)
    expected = Expected(tiny)  # reads the good head before it is replaced
    # Exact mode: every pass's results equal a fresh pass, so they can be compared at once.
    args = tiny.daemon_args("--delta", "0", "--compact-after-s", "60")
    with private_dirs() as paths, DaemonClient(daemon_args=args, paths=paths) as client:
        client.open("broken", PROSE, 1)
        assert_matches(client.wait_for("broken", 1), expected(PROSE))
        client.open("witness", PROSE, 1, labels=ZERO_SHOT)
        witness = client.wait_for("witness", 1)
        assert_matches(witness, expected(PROSE, ZERO_SHOT))

        write_float64_head(tiny.head)  # the daemon reloads it and recomputes both documents
        failure = wait_until(lambda: client.failure("broken"), what="the failed notification")
        assert failure.version == 1 and failure.code == wire.ErrorCode.PASS_FAILED
        assert "version 1 failed" in failure.message and "\n" not in failure.message
        assert client.latest("broken").version == 1  # the last good results stay the newest

        # The next change is tried again, from the text, and fails at once, not at the timeout.
        client.change("broken", 2, [Edit(0, 3, "A")])
        with pytest.raises(DaemonError) as raised:
            client.wait_for("broken", 2, timeout=WAIT_S)
        assert raised.value.code == wire.ErrorCode.PASS_FAILED
        assert "version 2 failed" in str(raised.value)

        # The witness, computed on the same worker around those failures, is untouched.
        client.change("witness", 2, [Edit(0, 3, "A")])
        assert_matches(client.wait_for("witness", 2), expected(client.text("witness"), ZERO_SHOT))
        assert client.latest("witness").paragraphs[-1].end == len(client.text("witness"))
        stats = client.stats()
        # One failure per request (the reload, the change), never a retry on its own: the
        # witness's pass came after, so a loop would have counted more by now.
        assert stats["failures"] == 2, stats
        assert stats["resident_documents"] == 1, stats  # the broken one's state is dropped

        write_head(tiny.head, LABELS, seed=0)  # the good head again: reload, recompute
        # wait_for would raise at once: version 2 is known to have failed. The reload brings
        # its results after all.
        again = wait_until(lambda: (r := client.latest("broken")).version == 2 and r,
                           what="results of the recomputed version 2")
        assert client.failure("broken") is None
        assert_matches(again, expected(client.text("broken")))
        client.change("broken", 3, [Edit(0, 1, "One")])
        assert_matches(client.wait_for("broken", 3), expected(client.text("broken")))


def _break(path, kind: str) -> None:
    """Turn a good file into one of the BAD_FILES kinds (replaced by rename, as writers do)."""
    if kind == "head: not a head":
        replace_file(path, b"not a head")
        return
    if kind == "student: pickle":
        replace_file(path, pickle.dumps({"config": {}, "tensors": []}))
        return
    with safetensors.safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = safetensors.torch.load_file(str(path))
    config = json.loads(meta["config"])
    meta["config"] = ("null" if kind == "student: null config"
                      else json.dumps({**config, "colour": 1}))
    safetensors.torch.save_file(tensors, str(path), metadata=meta)


BAD_FILES = {  # what users have met, and the words the error must say
    "head: not a head": ("head", "is not a vqedit head"),
    "student: unknown field": ("student", "no valid student config"),
    "student: null config": ("student", "no valid student config"),
    "student: pickle": ("student", "is not a vqedit student"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_without_a_model_each_open_gets_model_unavailable_until_the_file_is_fixed(tmp_path,
                                                                                   kind):
    """stats says why, every open gets MODEL_UNAVAILABLE with the reason, the worker lives,
    and once the file is fixed the daemon loads the model and computes."""
    tiny = make_tiny_model(tmp_path)
    expected = Expected(tiny)
    which, message = BAD_FILES[kind]
    path = getattr(tiny, which)
    good = path.read_bytes()
    _break(path, kind)
    args = tiny.daemon_args("--delta", "0", "--compact-after-s", "60")
    with private_dirs() as paths, DaemonClient(daemon_args=args, paths=paths) as client:
        client.open("doc", PROSE, 1)
        with pytest.raises(DaemonError) as raised:
            client.wait_for("doc", 1, timeout=WAIT_S)
        assert raised.value.code == wire.ErrorCode.MODEL_UNAVAILABLE
        assert message in str(raised.value)
        stats = client.stats()
        assert stats["failures"] == 1 and message in stats["model_error"]

        replace_file(path, good)  # fixed: the daemon loads the model and recomputes
        results = wait_until(lambda: client.latest("doc"), what="results after the fix")
        assert_matches(results, expected(PROSE))
        assert client.failure("doc") is None
