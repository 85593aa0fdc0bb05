"""Reload when the checkpoint, the head or the config file changes on disk (watchdog).

Files are watched through their directories, so that a file replaced by a rename (how careful
writers save) or created later is seen too. Events are debounced: a writer that saves in several
steps causes one reload, after it has been quiet for `DEBOUNCE_S`.
"""

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger("vqedit.daemon")

DEBOUNCE_S = 0.5  # long enough for a multi-step save, short next to a model load


class FileWatcher(FileSystemEventHandler):
    """Calls `changed()` (on a timer thread) after any of `files` changed and settled."""

    def __init__(self, files: Iterable[Path], changed: Callable[[], None]) -> None:
        self.files = {path.resolve() for path in files}
        self.changed = changed
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._observer = Observer()
        for folder in {path.parent for path in self.files if path.parent.is_dir()}:
            self._observer.schedule(self, str(folder), recursive=False)

    def start(self) -> None:
        self._observer.daemon = True
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        touched = {Path(str(p)).resolve() for p in (event.src_path, getattr(event, "dest_path", ""))
                   if p}
        if touched & self.files:
            with self._lock:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = threading.Timer(DEBOUNCE_S, self._fire)
                self._timer.daemon = True
                self._timer.start()

    def _fire(self) -> None:
        log.info("watched files changed on disk: reloading")
        self.changed()
