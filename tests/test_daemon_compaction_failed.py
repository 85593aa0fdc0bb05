"""A compaction that raises is reported like a failed pass: one `failed` for the version it
compacted, never retried on its own; the text stays, and the next change computes it again.

Nothing a client sends makes compaction alone fail (it recomputes the text the last pass just
computed, with the same model and head), so here `LiveDocument.compact` is made to raise, in a
worker in this process with a real tiny model.
"""

import queue

from tests.daemon_harness import PROSE, Expected, assert_matches, make_tiny_model
from vqedit.daemon.protocol import Failed, Results
from vqedit.daemon.settings import Settings
from vqedit.daemon.worker import Worker
from vqedit.engine.live import LiveDocument
from vqedit.text.edit import Edit

WAIT_S = 60.0  # far beyond a tiny model's pass
COMPACT_AFTER_S = 0.1


def test_a_failed_compaction_is_reported_once_and_the_next_change_recovers(tmp_path,
                                                                            monkeypatch):
    tiny = make_tiny_model(tmp_path)
    expected = Expected(tiny)
    sent: queue.Queue[Results | Failed] = queue.Queue()
    settings = Settings(model=str(tiny.base), student=tiny.student, head=tiny.head, delta=0.0,
                        compact_after_s=COMPACT_AFTER_S)

    def broken(self: LiveDocument, stop=None) -> None:
        raise RuntimeError("compaction broke")

    monkeypatch.setattr(LiveDocument, "compact", broken)
    worker = Worker(settings, lambda session, message: sent.put(message))
    worker.start()
    try:
        key = (0, "doc")
        worker.open(key, PROSE, 1)
        assert_matches(sent.get(timeout=WAIT_S), expected(PROSE))
        failed = sent.get(timeout=WAIT_S)
        assert isinstance(failed, Failed) and failed.version == 1, failed
        assert "compacting version 1 failed" in failed.message
        assert "compaction broke" in failed.message
        # Idle for many compaction delays: the failure is not retried in a loop.
        assert not _message_within(sent, 20 * COMPACT_AFTER_S)
        assert worker.counters.failures == 1

        monkeypatch.undo()
        worker.change(key, 2, [Edit(0, 3, "A")])
        text = "A" + PROSE[3:]
        assert_matches(sent.get(timeout=WAIT_S), expected(text))
        assert worker.counters.failures == 1
    finally:
        worker.stop()


def _message_within(sent: queue.Queue, seconds: float) -> bool:
    try:
        sent.get(timeout=seconds)
    except queue.Empty:
        return False
    return True
