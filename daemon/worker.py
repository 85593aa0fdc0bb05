"""The worker: the queue of documents with work, and the one inference thread that does it.

Threads and who calls what:
- The server's event loop calls `open`, `change`, `close`, `results`, `close_session`,
  `request_reload` and `stats`. They only check the request against the document's text (so a
  bad edit is refused at once, changing nothing), record it and wake the worker: never model work.
- One worker thread does all model work: loading, applying edits, computing results, compaction,
  eviction and unloading. `LiveDocument`s and the model are touched by the worker only.
- Everything both sides read or write is guarded by one condition variable, `_cond`.

What it owns: the queue and the thread. The documents' entries are `documents.py`'s, the model
and its zero-shot heads `models.py`'s, the budget and eviction `memory.py`'s.

Pending changes of a document are coalesced: the worker takes all of them at once, applies them
as the engine batches them (`LiveDocument.batch`) and computes results for the newest version
only, so a newer version supersedes older queued work. Results are pushed through `publish`
(called on the worker thread) and carry their version; per document they are computed, and so
pushed, in increasing version order.

A pass that raises (or finds no model) is reported, not retried: its document's client gets a
`Failed` for that version through `publish`, in order with its results, and the document keeps
its text but loses its model state. Nothing queues it again; its next change, `labels` request
or a reload builds it from the text, so a pass that always fails costs one attempt per request
and never loops. A compaction that raises is reported the same way, for the version it compacted.

A pass stops early rather than finish work nobody wants: between two segments when its document
was closed (or its connection went away) or the daemon is stopping, and between two edits of a
coalesced batch when a newer version came, handing the edits left to the next pass, which
coalesces them with the newer ones. Compaction, idle work, also stops between segments when any
other work comes. So a big document closed mid-pass costs at most one more segment.

A pass does not hold the worker while others wait: an opening document leaves its remaining
segments pending when another document has work, or after `SLICE_S` of computing, and goes
back in line behind that work; its results come once every segment is computed. So a small
document's edit waits for at most one segment of a big one.

The memory budget holds between passes and between an opening document's slices (`memory.py`);
a slice holds every state it computes until it ends. Memory freed by closed documents goes back
to the system (`trim_heap`) once no document waits, before idle work. (Evictions keep theirs:
trimming gives back the free memory the passes reuse too, and every page of it faults again.)
"""

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from vqedit.engine.allocator import trim_heap
from vqedit.engine.live import LiveDocument, LiveEditStats, Stopped
from vqedit.text.edit import Edit

from .documents import Entry, Key, results_of
from .memory import evict
from .models import Models, SharedModel, load_shared, placed
from .protocol import Cost, ErrorCode, Failed, LabelDescriptions, ProtocolError, Results, quote
from .settings import Settings

log = logging.getLogger("vqedit.daemon")

REASON_CHARS = 300  # of an exception's text in a `Failed` message, which is one line for people
# A document computed segment by segment goes back in line after this long, so that evictions
# keep its states within the memory budget during the pass too (~4,000 tokens of states, 200 MB,
# at most past it) and other documents' work waits at most one segment.
SLICE_S = 1.0


@dataclass
class Counters:
    edits: int = 0  # change requests accepted
    passes: int = 0  # worker passes over a document
    superseded: int = 0  # versions never computed because a newer one came first
    results_sent: int = 0  # results pushed
    compactions: int = 0  # documents compacted in idle time
    evictions: int = 0  # segment states dropped to keep within the budget
    restored: int = 0  # evicted segments computed again because an edit reached them
    reloads: int = 0  # successful model reloads
    resyncs: int = 0  # documents rebuilt from their text after an internal error
    failures: int = 0  # passes and compactions that raised or found no model: `Failed` pushed
    stopped: int = 0  # passes and compactions stopped early: document closed, newer version,
    # other work waiting (compaction) or the daemon stopping; not an open's slices, which go on


class Worker:
    def __init__(self, settings: Settings, publish: Callable[[int, Results | Failed], None],
                 loader: Callable[[Settings], SharedModel] = load_shared) -> None:
        self.settings = settings
        self._publish = publish  # (session, results or failure), called on the worker thread
        self.models = Models(loader)
        self._cond = threading.Condition()
        self._docs: dict[Key, Entry] = {}
        self._ready: OrderedDict[Key, None] = OrderedDict()  # documents with work, oldest first
        self._reload: Settings | None = None  # a reload asked for, with the settings to use
        self._stop = False
        self._busy = False  # the worker is inside a job
        self._current: Entry | None = None  # the document of that job, if it has one
        self._last_work = time.monotonic()  # for idle compaction and unloading
        self._trim = False  # documents were closed: give the freed heap back before idle work
        self.counters = Counters()
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)

    # --- called on the event loop ----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=30)

    def open(self, key: Key, text: str, version: int,
             labels: LabelDescriptions | None = None) -> None:
        """Open (or reopen, replacing) a document; its results follow as a notification."""
        with self._cond:
            old = self._docs.get(key)
            if old is not None:
                old.closed = True
            self._docs[key] = Entry(key, text, version, labels)
            self._wake(key)

    def change(self, key: Key, version: int, edits: list[Edit]) -> None:
        """Accept edits for a new version, or raise ProtocolError changing nothing."""
        with self._cond:
            self._entry(key).accept(version, edits)
            self.counters.edits += 1
            self._wake(key)

    def set_labels(self, key: Key, labels: LabelDescriptions | None) -> None:
        """Score a document with other labels; its results are pushed again, same version."""
        with self._cond:
            self._entry(key).labels = labels
            self._wake(key)

    def close(self, key: Key) -> None:
        with self._cond:
            self._entry(key).closed = True
            del self._docs[key]
            self._ready.pop(key, None)
            self._trim = True
            self._cond.notify_all()

    def close_session(self, session: int) -> None:
        """Close every document of a connection that went away."""
        with self._cond:
            for key in [k for k in self._docs if k[0] == session]:
                self._docs.pop(key).closed = True
                self._ready.pop(key, None)
            self._trim = True
            self._cond.notify_all()

    def results(self, key: Key) -> Results | None:
        """The newest computed results (maybe for an older version), None before the first."""
        with self._cond:
            entry = self._entry(key)
            if entry.snapshot is None and self.models.error is not None:
                raise ProtocolError(ErrorCode.MODEL_UNAVAILABLE, self.models.error)
            return entry.snapshot

    def request_reload(self, settings: Settings | None = None) -> None:
        """Reload the model (and head) and recompute every open document, on the worker."""
        with self._cond:
            self._reload = settings or self.settings
            self._cond.notify()

    def computing(self) -> str | None:
        """The uri of the document the worker is computing or compacting now."""
        with self._cond:
            return self._current.key[1] if self._current is not None else None

    def document_count(self) -> tuple[int, int, int]:
        """(open documents, documents with states in memory, bytes of those states)."""
        with self._cond:
            resident = [e for e in self._docs.values() if e.state_bytes]
            return len(self._docs), len(resident), sum(e.state_bytes for e in resident)

    def settle(self, timeout: float) -> bool:
        """Wait until no document has pending work (tests and benchmarks); True if settled."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._ready or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def _entry(self, key: Key) -> Entry:
        entry = self._docs.get(key)
        if entry is None:
            raise ProtocolError(ErrorCode.UNKNOWN_DOCUMENT,
                                f"{quote(key[1])} is not open in this session; open it first")
        return entry

    def _wake(self, key: Key) -> None:
        self._ready[key] = None  # keeps its place in line if it was already waiting
        self._last_work = time.monotonic()
        self._cond.notify()

    # --- the worker ------------------------------------------------------------------------

    def _run(self) -> None:
        if self.settings.threads:
            torch.set_num_threads(self.settings.threads)
        with torch.inference_mode():
            self._load(self.settings)
            while True:
                job = self._next_job()
                if job is None:
                    return
                try:
                    job()
                except Exception:
                    log.exception("worker job failed; the daemon carries on")
                finally:
                    with self._cond:
                        self._busy, self._current = False, None
                        self._cond.notify_all()

    def _next_job(self) -> Callable[[], None] | None:
        """Wait for the next thing to do: stop, reload, a document, idle work."""
        with self._cond:
            while True:
                if self._stop:
                    return None
                self._busy = True
                if self._reload is not None:
                    settings, self._reload = self._reload, None
                    return lambda: self._do_reload(settings)
                if self._ready:
                    key, _ = self._ready.popitem(last=False)
                    entry = self._docs[key]
                    edits, entry.pending = entry.pending, []
                    versions, entry.pending_versions = entry.pending_versions, 0
                    self.counters.superseded += max(versions - 1, 0)
                    text, version, labels = entry.text, entry.version, entry.labels
                    self._current = entry
                    return lambda: self._compute(entry, text, version, edits, labels)
                if self._trim:
                    self._trim = False
                    return trim_heap
                idle = time.monotonic() - self._last_work
                if idle >= self.settings.compact_after_s:
                    for entry in self._docs.values():
                        if entry.needs_compaction and entry.live is not None:
                            entry.needs_compaction, self._current = False, entry
                            return lambda e=entry: self._compact(e)
                if self.models.model is not None and idle >= self.settings.idle_unload_s:
                    return self._unload
                self._busy = False
                self._cond.notify_all()
                waits = [self.settings.compact_after_s - idle, self.settings.idle_unload_s - idle]
                self._cond.wait(max(min([w for w in waits if w > 0], default=1.0), 0.05))

    def _load(self, settings: Settings) -> SharedModel | None:
        """Load the model for `settings`; its settings become the worker's if it loads."""
        model = self.models.load(settings)
        if model is not None:
            self.settings = settings
        return model

    def _compute(self, entry: Entry, text: str, version: int, edits: list[Edit],
                 labels: LabelDescriptions | None) -> None:
        model = self.models.current(self.settings)
        if model is None:
            self._report(entry, Failed(entry.key[1], version, ErrorCode.MODEL_UNAVAILABLE,
                                       f"no model to compute version {version} with: "
                                       f"{self.models.error}; fix it and reload the daemon"))
            return
        counter = model.engine.model.counter
        try:
            with placed(model.device):
                before = counter.macs
                yield_now = partial(self._other_work, entry, version, time.monotonic())
                live, applied, rest = self._bring_up_to_date(model, entry, text, version, edits,
                                                             yield_now)
                settled = not rest and live.settle(partial(self._closed, entry), yield_now)
                if not settled and (rest or self._superseded(entry, version)):
                    self._carry_over(entry, live, rest)
                    return
                if not settled:  # other documents' work first; this one goes on after it
                    self._continue_later(entry, live)
                    return
                cost = Cost(counter.macs - before, live.dense_macs(), live.tokens(),
                            [e.dirty for stats in applied for e in stats.edited])
                results = results_of(self.models.head(model, labels), entry.key[1], version,
                                     live, exact=model.engine.mode.delta == 0, cost=cost)
        except Stopped:  # closed, or the daemon is stopping: the half-built state goes
            with self._cond:
                self.counters.stopped += 1
                entry.drop_state()
            log.info("%s: pass stopped (document closed or daemon stopping)", entry.key[1])
            return
        except Exception as e:
            self._failed(entry, version, "computing", e)
            return
        with self._cond:
            self.counters.passes += 1
            self.counters.restored += sum(stats.restored for stats in applied)
            if entry.closed:
                return
            entry.live, entry.live_version, entry.snapshot = live, version, results
            entry.state_bytes, entry.needs_compaction = live.nbytes(), True
            if entry.version == version:  # equal texts: keep one copy, the engine's
                entry.text = live.text
            self._evict()
            self.counters.results_sent += 1
        self._publish(entry.key[0], results)

    def _bring_up_to_date(self, model: SharedModel, entry: Entry, text: str, version: int,
                          edits: list[Edit], yield_now: Callable[[], bool],
                          ) -> tuple[LiveDocument, list[LiveEditStats], list[Edit]]:
        """`entry.live` with `edits` applied, what each cost, and the edits left when a newer
        version stopped the batch; or a fresh document (no edit stats) where there is none,
        computed until `yield_now` says so. Raises `Stopped` when the document was closed (or
        the daemon is stopping) meanwhile."""
        closed = partial(self._closed, entry)

        def superseded() -> bool:
            with self._cond:
                return entry.closed or self._stop or entry.version != version

        live = entry.live
        if live is None:  # opened: its segments are computed until other work waits
            return LiveDocument(model.engine, model.tokenizer, text, closed, yield_now), [], []
        try:
            batch, applied = live.batch(edits, text), []
            for i, edit in enumerate(batch.edits):
                if i and superseded():  # at least one edit per pass: typing cannot starve it
                    return live, applied, batch.edits[i:]
                if batch.merged:  # a newer version leaves the segments not yet computed pending
                    applied.append(live.apply_merged(edit, closed,
                                                     partial(self._superseded, entry, version)))
                else:
                    applied.append(live.apply(edit, closed))
            if live.text != text:
                raise RuntimeError("document text diverged from the accepted text")
            return live, applied, []
        except Stopped:
            raise
        except Exception:
            # The state may be half-updated: rebuild this document only, from its text.
            log.exception("edit failed on %s; resyncing it from its text", entry.key[1])
            with self._cond:
                self.counters.resyncs += 1
            return LiveDocument(model.engine, model.tokenizer, text, closed), [], []

    def _superseded(self, entry: Entry, version: int) -> bool:
        """Whether a newer version of the document came after `version`."""
        with self._cond:
            return entry.version != version

    def _closed(self, entry: Entry) -> bool:
        """Whether the document was closed (or its connection lost) or the daemon is stopping."""
        with self._cond:
            return entry.closed or self._stop

    def _other_work(self, entry: Entry, version: int, began: float) -> bool:
        """Whether a pass computing segments should leave the rest pending: a newer version of
        its document came, another document (or a reload) waits for the worker, or the pass has
        run `SLICE_S` since `began`."""
        with self._cond:
            return (entry.version != version or bool(self._ready) or self._reload is not None
                    or time.monotonic() - began > SLICE_S)

    def _continue_later(self, entry: Entry, live: LiveDocument) -> None:
        """Other work or the end of a slice stopped a pass between segments: keep what was
        computed, back within the budget, and queue the document again behind that work; its
        results come once every segment is computed."""
        with self._cond:
            if entry.closed:
                return
            entry.live, entry.live_version, entry.needs_compaction = live, -1, False
            entry.state_bytes = live.nbytes()
            self._ready[entry.key] = None
            self._ready.move_to_end(entry.key)
            self._evict()
            self._cond.notify_all()

    def _carry_over(self, entry: Entry, live: LiveDocument, rest: list[Edit]) -> None:
        """A newer version stopped a batch: keep what was applied, hand the rest to the next
        pass (the document is already queued: the change that came woke it). A stopped merged
        edit leaves no edits but segments pending, which the next pass computes."""
        with self._cond:
            self.counters.stopped += 1
            self.counters.superseded += 1  # this pass's version is never computed
            if entry.closed:
                return
            # `live` holds a text between two versions: no results, no compaction, until the
            # next pass brings it to one.
            entry.live, entry.live_version, entry.needs_compaction = live, -1, False
            entry.pending[:0] = rest  # they lead from live.text to the text the pass was for
            entry.state_bytes = live.nbytes()
            self._evict()

    def _compact(self, entry: Entry) -> None:
        """Idle time: renumber positions and recompute exactly; push the exact results."""
        model, live = self.models.model, entry.live
        if model is None or live is None:
            return
        with self._cond:
            labels = entry.labels

        def other_work() -> bool:
            with self._cond:
                return (entry.closed or self._stop or bool(self._ready)
                        or self._reload is not None)

        try:
            with placed(model.device):
                live.compact(other_work)
                results = results_of(self.models.head(model, labels), entry.key[1],
                                     entry.live_version, live, exact=True)
        except Stopped:  # the document is whole, partly compacted: finish it when idle
            with self._cond:
                self.counters.stopped += 1
                if not entry.closed:
                    entry.needs_compaction = True
                    entry.state_bytes = live.nbytes()
                    self._evict()
            return
        except Exception as e:
            self._failed(entry, entry.live_version, "compacting", e)
            return
        with self._cond:
            self.counters.compactions += 1
            if entry.closed or entry.snapshot is None:
                return
            # Compaction computed evicted segments again: back within the budget.
            entry.state_bytes = live.nbytes()
            self._evict()
            # A version accepted meanwhile is computed next; these results are still newer
            # than or equal to the last ones pushed for this document.
            entry.snapshot = results
            self.counters.results_sent += 1
        self._publish(entry.key[0], results)

    def _failed(self, entry: Entry, version: int, doing: str, error: Exception) -> None:
        """A pass or compaction of `entry` raised: its state may be half-updated, so it goes;
        the text stays, and the next change, `labels` or reload builds the state from it."""
        log.error("%s: %s version %d failed; its model state is dropped, its text kept",
                  entry.key[1], doing, version, exc_info=error)
        with self._cond:
            entry.drop_state()
            entry.needs_compaction = False
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:REASON_CHARS]
        self._report(entry, Failed(entry.key[1], version, ErrorCode.PASS_FAILED,
                                   f"{doing} version {version} failed ({reason}); the text is "
                                   "kept and the next change computes it again from scratch "
                                   "(traceback in the daemon log)"))

    def _report(self, entry: Entry, failure: Failed) -> None:
        """Tell the document's client that `failure.version` gets no results."""
        with self._cond:
            self.counters.failures += 1
            if entry.closed:
                return
        self._publish(entry.key[0], failure)

    def _evict(self) -> None:
        """Back within the memory budget (worker, under the lock; `memory.evict`)."""
        self.counters.evictions += evict(self._docs.values(), self.settings.memory_mb * 2**20)

    def _unload(self) -> None:
        """Idle: give the memory back; texts and last results stay, states are rebuilt later."""
        with self._cond:
            for entry in self._docs.values():
                entry.drop_state()
        self.models.unload()
        log.info("idle for %.0f s: model unloaded", self.settings.idle_unload_s)

    def _do_reload(self, settings: Settings) -> None:
        if self._load(settings) is None:
            return
        with self._cond:
            self.counters.reloads += 1
            for key, entry in self._docs.items():
                entry.drop_state()
                entry.pending, entry.pending_versions = [], 0
                self._ready[key] = None
