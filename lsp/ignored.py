"""Labels the user ignored for a paragraph (`vqedit.ignoreLabel`), kept across closes and restarts.

    $XDG_STATE_HOME/vqedit/ignored-labels.json (next to the daemon's log):
    {"<document uri>": {"<paragraph text>": ["<label>", …]}}

Keyed by the paragraph's text, so an edited paragraph is a new paragraph: what the user judged
is gone. A change re-reads the file, merges and writes it whole, atomically (a temporary file
renamed over it), all under an exclusive lock on `ignored-labels.json.lock` beside it, so two
servers (two editors) changing it at the same instant both keep their change. A file that cannot
be read is logged, moved aside (`.corrupt`, so nothing is lost) and treated as empty.
`vqedit.clearIgnored` undoes a document's.

Used on the server's event loop only.
"""

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path

from filelock import FileLock

from vqedit.daemon.paths import Paths

log = logging.getLogger("vqedit.lsp")

Ignored = dict[str, dict[str, list[str]]]  # uri → paragraph text → labels


def default_path() -> Path:
    return Paths.default().log.with_name("ignored-labels.json")


class IgnoredLabels:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = FileLock(path.with_name(path.name + ".lock"))  # read-merge-write, whole
        self._ignored: Ignored | None = None  # read at the first use, so a problem is logged
        # to the editor

    def labels(self, uri: str, paragraph: str) -> list[str]:
        return self._read_once().get(uri, {}).get(key(paragraph), [])

    def add(self, uri: str, paragraph: str, label: str) -> None:
        with self._locked():
            ignored = self._reread()
            labels = ignored.setdefault(uri, {}).setdefault(key(paragraph), [])
            if label not in labels:
                labels.append(label)
            self._write(ignored)

    def clear(self, uri: str) -> int:
        """Forget the document's ignored labels; how many there were."""
        with self._locked():
            ignored = self._reread()
            count = sum(len(labels) for labels in ignored.pop(uri, {}).values())
            self._write(ignored)
        return count

    def _locked(self) -> FileLock:
        """Held from the re-read to the rename, so no other server writes in between."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self._lock

    def _read_once(self) -> Ignored:
        if self._ignored is None:
            self._ignored = self._reread()
        return self._ignored

    def _reread(self) -> Ignored:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if not _well_formed(raw):
                raise ValueError("not an object {uri: {paragraph: [label, …]}}")
            self._ignored = raw
        except FileNotFoundError:
            self._ignored = {}
        except (OSError, ValueError) as e:
            aside = self.path.with_name(self.path.name + ".corrupt")
            log.error("cannot read the ignored labels in %s (%s); moved it to %s and starting "
                      "with none", self.path, e, aside)
            with contextlib.suppress(OSError):  # then it is overwritten at the next change
                os.replace(self.path, aside)
            self._ignored = {}
        return self._ignored

    def _write(self, ignored: Ignored) -> None:
        self._ignored = ignored
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=self.path.parent,
                                         prefix=self.path.name, delete=False) as file:
            json.dump(ignored, file, ensure_ascii=False, indent=1)
        os.replace(file.name, self.path)


def key(paragraph: str) -> str:
    """Leading and trailing blanks (a line break more or less) do not make a new paragraph."""
    return paragraph.strip()


def _well_formed(raw: object) -> bool:
    return isinstance(raw, dict) and all(
        isinstance(uri, str) and isinstance(paragraphs, dict) and all(
            isinstance(text, str) and isinstance(labels, list)
            and all(isinstance(label, str) for label in labels)
            for text, labels in paragraphs.items())
        for uri, paragraphs in raw.items())
