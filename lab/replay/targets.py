"""What `vqedit replay` drives: the engine in process, a daemon, or a language server.

Every target takes the checked steps of an edit log (`lsp/editlog.py`) one at a time and
waits for the results of each version before the next is sent, so a latency is one edit's
alone: from the change leaving the replay to its results arriving.

    target.open(step)              # an open record
    outcome = target.change(step)  # a change record: latency, label, and what it cost
    target.verify(uri, text)       # the target's results against a full recomputation
    target.close(step)
    target.final()                 # {uri: results} of every document still open
"""

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch

from vqedit.daemon.client import DaemonClient
from vqedit.daemon.documents import results_of
from vqedit.daemon.models import SharedModel, load_shared, placed
from vqedit.daemon.paths import Paths
from vqedit.daemon.protocol import Cost, Results
from vqedit.daemon.settings import Settings
from vqedit.engine.live import LiveDocument
from vqedit.lab.replay.driver import LspDriver
from vqedit.lab.verify import verify
from vqedit.lsp.editlog import Step
from vqedit.text.markdown import mask

SCORE_TOLERANCE = 1e-3  # compacted daemon results against a fresh pass in this process


@dataclass
class Outcome:
    latency_ms: float  # change sent → its results received
    label: str | None  # the document's label after the change
    score: float | None  # that label's score
    macs: int | None = None  # multiply-accumulates of the incremental update (None: not known)
    dense_macs: int | None = None  # those of a dense pass over the whole document
    dirty: list[list[int]] = field(default_factory=list)  # |D| per layer, per edited segment
    tokens: int | None = None  # the document's model-input tokens after the change

    @classmethod
    def of(cls, latency_ms: float, label: str | None, score: float | None,
           cost: Cost | None) -> "Outcome":
        """An outcome whose operation counts are the ones the results carried."""
        if cost is None:
            return cls(latency_ms, label, score)
        return cls(latency_ms, label, score, cost.macs, cost.dense_macs, cost.dirty, cost.tokens)


class Target(Protocol):
    def describe(self) -> dict[str, Any]: ...
    def open(self, step: Step) -> None: ...
    def change(self, step: Step) -> Outcome: ...
    def verify(self, uri: str, text: str) -> bool: ...
    def close(self, step: Step) -> None: ...
    def final(self) -> dict[str, dict[str, Any]]: ...
    def stop(self) -> None: ...


def results_json(results: Results) -> dict[str, Any]:
    value = asdict(results)
    value.pop("uri")
    return value


def _best(results: Results) -> float | None:
    return results.scores[results.label] if results.label is not None else None


class EngineTarget:
    """`LiveDocument`s in this process, loaded and run exactly as the daemon's worker does."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model: SharedModel = load_shared(settings)
        self.documents: dict[str, tuple[LiveDocument, int]] = {}  # uri → (document, version)

    def describe(self) -> dict[str, Any]:
        return {"model": self.model.name, "mode": self.settings.mode_name,
                "device": str(self.model.device), "threads": torch.get_num_threads()}

    def open(self, step: Step) -> None:
        with placed(self.model.device):
            live = LiveDocument(self.model.engine, self.model.tokenizer, step.text)
        self.documents[step.record.uri] = (live, step.record.version)

    def change(self, step: Step) -> Outcome:
        uri = step.record.uri
        live, _ = self.documents[uri]
        with placed(self.model.device):
            started = time.perf_counter()
            stats = [live.apply(edit) for edit in step.edits]
            results = self._results(uri, step.record.version, live)
            latency = (time.perf_counter() - started) * 1000
        self.documents[uri] = (live, step.record.version)
        return Outcome(latency, results.label, _best(results), sum(s.macs for s in stats),
                       live.dense_macs(), [e.dirty for s in stats for e in s.edited],
                       live.tokens())

    def verify(self, uri: str, text: str) -> bool:
        """The text is the log's, and every segment's state is what a full pass computes
        (exact mode), or what a full pass forced to its codes computes with every code obeying
        the hysteresis rule (sticky mode)."""
        live, _ = self.documents[uri]
        exact = self.model.engine.mode.delta == 0
        with placed(self.model.device):
            verdicts = [verify(self.model.engine, state) for state in live.states]
        return live.text == text and all(v.exact() if exact else v.mechanics() for v in verdicts)

    def close(self, step: Step) -> None:
        del self.documents[step.record.uri]

    def final(self) -> dict[str, dict[str, Any]]:
        return {uri: results_json(self._results(uri, version, live))
                for uri, (live, version) in self.documents.items()}

    def _results(self, uri: str, version: int, live: LiveDocument) -> Results:
        exact = self.model.engine.mode.delta == 0
        return results_of(self.model.head, uri, version, live, exact)

    def stop(self) -> None:
        self.documents.clear()


class Reference:
    """Fresh exact passes in this process: what a compacted daemon's results must equal."""

    def __init__(self, settings: Settings) -> None:
        self.model = load_shared(Settings(model=settings.model, student=settings.student,
                                          head=settings.head, device="cpu", delta=0.0))

    def fresh(self, uri: str, text: str) -> Results:
        live = LiveDocument(self.model.engine, self.model.tokenizer, text)
        return results_of(self.model.head, uri, 0, live, True)

    def agrees(self, results: Results, text: str) -> bool:
        fresh = self.fresh(results.uri, text)
        return (results.label == fresh.label
                and [(p.start, p.end, p.label) for p in results.paragraphs]
                == [(p.start, p.end, p.label) for p in fresh.paragraphs]
                and all(abs(results.scores[k] - v) <= SCORE_TOLERANCE
                        for k, v in fresh.scores.items()))


class DaemonTarget:
    """A daemon reached through `DaemonClient` (started by it when none runs at `paths`).

    A private daemon (the replay's own) is shut down at the end, the user's is left running.
    """

    def __init__(self, settings: Settings, daemon_args: list[str], paths: Paths,
                 private: bool, timeout: float = 600.0) -> None:
        self.settings = settings
        self.private = private
        self.client = DaemonClient(daemon_args=daemon_args, paths=paths, request_timeout=timeout)
        self.client.connect()
        self.timeout = timeout
        self.reference: Reference | None = None  # loaded at the first verification
        self.versions: dict[str, int] = {}

    def describe(self) -> dict[str, Any]:
        stats = self.client.stats()
        return {"model": stats["model"], "mode": stats["mode"], "device": stats["device"],
                "threads": self.settings.threads or None, "daemon_pid": stats["pid"]}

    def open(self, step: Step) -> None:
        self.client.open(step.record.uri, step.text, step.record.version)
        self.client.wait_for(step.record.uri, step.record.version, self.timeout)
        self.versions[step.record.uri] = step.record.version

    def change(self, step: Step) -> Outcome:
        uri, version = step.record.uri, step.record.version
        started = time.perf_counter()
        self.client.change(uri, version, list(step.edits))
        results = self.client.wait_for(uri, version, self.timeout)
        latency = (time.perf_counter() - started) * 1000
        self.versions[uri] = version
        return Outcome.of(latency, results.label, _best(results), results.cost)

    def verify(self, uri: str, text: str) -> bool:
        """Wait for the daemon's idle compaction of this version; its exact results must equal
        a fresh pass of the log's text in this process."""
        version = self.versions[uri]
        deadline = time.monotonic() + self.timeout
        while not ((r := self.client.latest(uri)) and r.version == version and r.exact):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the daemon did not compact {uri} version {version}")
            time.sleep(0.02)
        if self.reference is None:
            self.reference = Reference(self.settings)
        return self.client.text(uri) == text and self.reference.agrees(r, text)

    def close(self, step: Step) -> None:
        self.client.close(step.record.uri)
        self.versions.pop(step.record.uri)

    def final(self) -> dict[str, dict[str, Any]]:
        return {uri: results_json(self.client.wait_for(uri, version, self.timeout))
                for uri, version in self.versions.items()}

    def stop(self) -> None:
        if not self.private:
            self.client.disconnect()
            return
        self.client.shutdown()
        for process in self.client.spawned:
            process.wait(self.timeout)  # reaped here, so no zombie outlives the replay


class LspTarget:
    """`vqedit lsp` over stdio, driven as an editor drives it, in front of a daemon that this
    target starts first (so the model options apply), which the server then connects to."""

    def __init__(self, settings: Settings, daemon_args: list[str], paths: Paths, private: bool,
                 debounce_ms: int, timeout: float = 600.0) -> None:
        self.daemon = DaemonTarget(settings, daemon_args, paths, private, timeout)
        self.driver = LspDriver({"debounceMs": debounce_ms}, timeout=timeout,
                                stderr=paths.log.with_name("lsp.log"))
        self.driver.start()
        self.texts: dict[str, tuple[str, int]] = {}  # uri → (text, version) the server has
        self.languages: dict[str, str] = {}  # uri → languageId: Markdown's code is not prose

    def describe(self) -> dict[str, Any]:
        return {**self.daemon.describe(), "position_encoding": self.driver.encoding}

    def open(self, step: Step) -> None:
        record = step.record
        language = record.language or "markdown"
        self.driver.open(record.uri, step.text, record.version, language)
        self.driver.wait_published(record.uri, record.version)
        self.texts[record.uri] = (step.text, record.version)
        self.languages[record.uri] = language

    def change(self, step: Step) -> Outcome:
        uri, version = step.record.uri, step.record.version
        contents = self.driver.content_changes(self.texts[uri][0], step.edits)
        sent = self.driver.change(uri, version, contents)
        computed = self.driver.wait_computed(uri, version)
        status = self.driver.wait_status(uri, version)
        self.texts[uri] = (step.text, version)
        cost = status.get("cost")
        return Outcome.of((computed - sent) * 1000, status.get("label"), status.get("score"),
                          None if cost is None else Cost.parse(cost))

    def verify(self, uri: str, text: str) -> bool:
        """Have the server recompute the document from scratch (`vqedit.recompute`); the label
        and score it then reports must equal a fresh pass, in this process, of the log's text as
        the server sends it (Markdown code blanked)."""
        seen = len(self.driver.documents[uri].status)
        self.driver.command("vqedit.recompute", uri)
        status = self.driver.wait_status(uri, self.texts[uri][1], after=seen)
        if self.daemon.reference is None:
            self.daemon.reference = Reference(self.settings)
        prose = mask(text) if self.languages[uri] == "markdown" else text
        fresh = self.daemon.reference.fresh(uri, prose)
        return (self.texts[uri][0] == text and status.get("label") == fresh.label
                and abs(status.get("score", 0.0) - fresh.scores[fresh.label]) <= SCORE_TOLERANCE)

    def close(self, step: Step) -> None:
        self.driver.close(step.record.uri)
        del self.texts[step.record.uri], self.languages[step.record.uri]

    def final(self) -> dict[str, dict[str, Any]]:
        found = {}
        for uri, (_, version) in self.texts.items():
            status = self.driver.wait_status(uri, version)
            found[uri] = {"version": status["version"], "label": status.get("label"),
                          "score": status.get("score")}
        return found

    def stop(self) -> None:
        try:
            self.driver.stop()
        finally:
            self.daemon.stop()

    @property
    def settings(self) -> Settings:
        return self.daemon.settings
