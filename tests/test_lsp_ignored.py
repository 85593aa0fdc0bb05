"""The ignored-labels file: kept by paragraph text, written atomically, a bad file set aside."""

import json
import logging
import subprocess
import sys

from vqedit.lsp.ignored import IgnoredLabels

URI = "file:///a.md"
WRITES = 150  # per process; without the lock two writers lost some of these in every run tried

# A server's worth of `vqedit.ignoreLabel`s: waits for the go file so both start together.
WRITER = """
import pathlib, sys, time
from vqedit.lsp.ignored import IgnoredLabels
path, name, writes = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
store = IgnoredLabels(path)
while not path.with_name("go").exists():
    time.sleep(0.001)
for i in range(writes):
    store.add("file:///a.md", f"{name} paragraph {i}.", "sport")
"""


def test_labels_are_kept_by_paragraph_text_across_instances(tmp_path):
    path = tmp_path / "state" / "ignored-labels.json"
    IgnoredLabels(path).add(URI, "A paragraph.\n", "sport")
    again = IgnoredLabels(path)
    assert again.labels(URI, "A paragraph.") == ["sport"]  # a line break more or less
    assert again.labels(URI, "A paragraph, edited.") == []
    assert again.labels("file:///b.md", "A paragraph.") == []
    # No temporary file is left; the (empty) lock file stays.
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, path.name + ".lock"]


def test_each_write_rereads_the_file_so_two_servers_keep_each_others_labels(tmp_path):
    path = tmp_path / "ignored-labels.json"
    one, two = IgnoredLabels(path), IgnoredLabels(path)
    one.add(URI, "First.", "sport")
    two.add(URI, "Second.", "tech")
    assert json.loads(path.read_text()) == {URI: {"First.": ["sport"], "Second.": ["tech"]}}


def test_two_server_processes_writing_at_once_lose_no_change(tmp_path):
    path = tmp_path / "ignored-labels.json"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, str(WRITES)])
               for name in ("one", "two")]
    (tmp_path / "go").touch()
    assert [writer.wait(timeout=300) for writer in writers] == [0, 0]
    kept = json.loads(path.read_text())[URI]
    assert sorted(kept) == sorted(f"{name} paragraph {i}." for name in ("one", "two")
                                  for i in range(WRITES))


def test_clear_forgets_one_document_and_says_how_many(tmp_path):
    path = tmp_path / "ignored-labels.json"
    store = IgnoredLabels(path)
    store.add(URI, "First.", "sport")
    store.add(URI, "First.", "tech")
    store.add("file:///b.md", "Other.", "sport")
    assert store.clear(URI) == 2 and store.clear(URI) == 0
    assert IgnoredLabels(path).labels("file:///b.md", "Other.") == ["sport"]


def test_a_corrupt_file_is_logged_moved_aside_and_read_as_empty(tmp_path, caplog):
    path = tmp_path / "ignored-labels.json"
    for bad in ("{not json", '{"file:///a.md": ["sport"]}'):
        path.write_text(bad)
        store = IgnoredLabels(path)
        with caplog.at_level(logging.ERROR, logger="vqedit.lsp"):
            assert store.labels(URI, "First.") == []
        assert "cannot read the ignored labels" in caplog.text
        assert path.with_name(path.name + ".corrupt").read_text() == bad
        store.add(URI, "First.", "sport")
        assert IgnoredLabels(path).labels(URI, "First.") == ["sport"]
        caplog.clear()
