"""Work nobody wants any more is stopped early: a real daemon process, documents far too big to
finish quickly, closed, disconnected or superseded while the worker is on them.

`stats.computing` names the document the worker is on, so each test acts while that work is
under way; the worker must then be free for the next document at once (a whole pass of BIG takes
minutes here), count the stop, and leave every other state exact.
"""

import pytest

from tests.daemon_harness import (
    PROSE,
    RawConnection,
    assert_matches,
    private_dirs,
    wait_until,
)
from vqedit.daemon import protocol as wire
from vqedit.daemon.client import DaemonClient
from vqedit.text.edit import Edit

SENTENCE = "Paragraph {} tells of the council, the late match and the new phone."
BIG = "\n\n".join(SENTENCE.format(i) for i in range(20_000))  # 20,000 segments
MANY = "\n\n".join(SENTENCE.format(i) for i in range(200))
# Long enough that its compaction is still under way when an edit comes, however busy the machine
# (with MANY, a loaded machine could finish the compaction first).
SLOW = "\n\n".join(SENTENCE.format(i) for i in range(2_000))
FAST_S = 60  # far below what BIG's pass takes, far above one segment


@pytest.fixture
def daemon(tiny):
    with private_dirs() as paths:
        args = tiny.daemon_args("--delta", "0", "--compact-after-s", "0.3")
        with DaemonClient(daemon_args=args, paths=paths) as client:
            client.open("small", PROSE, 1)
            client.wait_for("small", 1)  # the model is loaded
            wait_until(lambda: client.stats()["compactions"] == 1, what="idle")
            yield paths, args, client


def working_on(client: DaemonClient, uri: str) -> None:
    wait_until(lambda: client.stats()["computing"] == uri, what=f"the worker on {uri}")


def test_a_document_closed_mid_pass_frees_the_worker_and_reopens_exact(daemon, expected):
    _, _, client = daemon
    client.open("big", BIG, 1)
    working_on(client, "big")
    client.close("big")
    client.change("small", 2, [Edit(0, 3, "A")])
    assert client.wait_for("small", 2, timeout=FAST_S).version == 2
    assert client.stats()["stopped"] == 1
    wait_until(lambda: client.stats()["compactions"] == 2, what="compacted")
    assert_matches(client.latest("small"), expected(client.text("small")))
    client.open("big", MANY, 1)  # the same uri again: a new document, computed whole
    assert_matches(client.wait_for("big", 1), expected(MANY))


def test_a_client_gone_mid_pass_frees_the_worker(daemon, expected):
    paths, args, client = daemon
    other = DaemonClient(daemon_args=args, paths=paths)
    other.open("big", BIG, 1)
    working_on(client, "big")
    other.disconnect()
    client.change("small", 2, [Edit(0, 3, "A")])
    assert client.wait_for("small", 2, timeout=FAST_S).version == 2
    assert client.stats()["stopped"] == 1


def test_idle_compaction_gives_way_to_an_edit_and_finishes_later(daemon, expected):
    _, _, client = daemon
    client.open("slow", SLOW, 1)
    client.wait_for("slow", 1, timeout=FAST_S)
    working_on(client, "slow")  # no work left: this is its compaction
    client.change("small", 2, [Edit(0, 3, "A")])
    assert client.wait_for("small", 2, timeout=FAST_S).version == 2
    assert client.stats()["stopped"] == 1
    # Both compacted in the end; "slow" whole: segments compacted before the stop and after.
    wait_until(lambda: client.stats()["compactions"] == 3, what="both compacted")
    assert_matches(client.latest("slow"), expected(SLOW))


def test_a_newer_version_stops_a_burst_between_segments_and_takes_over_the_rest(daemon, expected):
    paths, _, client = daemon
    # One word into every other paragraph, back to front so each offset holds as written: a
    # burst cheaper recomputed than edited, so the worker computes each paragraph it changed
    # once, segment by segment; the newer version stops it, and the next pass computes the
    # paragraphs left pending.
    starts = [i for i in range(len(SLOW)) if i == 0 or SLOW[i - 2:i] == "\n\n"]
    edits = [{"start": at, "end": at, "text": "Then "} for at in reversed(starts[::2])]
    text = SLOW
    for edit in edits:
        text = text[:edit["start"]] + edit["text"] + text[edit["start"]:]
    raw = RawConnection(paths.socket)
    raw.hello()
    raw.request("open", {"uri": "many", "version": 1, "text": SLOW})
    # Its pass, then its compaction: the worker is idle before the batch comes.
    assert [raw.notification()["params"]["version"] for _ in range(2)] == [1, 1]
    assert "result" in raw.request("change", {"uri": "many", "version": 2, "edits": edits})
    working_on(client, "many")
    assert "result" in raw.request("change", {"uri": "many", "version": 3, "edits": [
        {"start": 0, "end": 0, "text": "Now. "}]})
    text = "Now. " + text
    pushed = [raw.notification()["params"], raw.notification()["params"]]  # pass, compaction
    assert [p["version"] for p in pushed] == [3, 3], "version 2 was computed"
    stats = client.stats()
    assert stats["stopped"] == 1 and stats["superseded"] == 1
    assert_matches(wire.Results.parse(pushed[-1]), expected(text))
    raw.close()
