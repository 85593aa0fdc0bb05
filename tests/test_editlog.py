"""Edit logs: records survive a round trip, positions mean what LSP says, bad logs name the line,
and the logs `vqedit edits` makes reach the text they claim to."""

import itertools
import json
import subprocess
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vqedit.lab.edits.from_git import history_log, revisions, word_edits
from vqedit.lab.edits.synth import synthesize, write
from vqedit.lsp import editlog
from vqedit.text.edit import Edit

PROSE = "The council met.\n\nIts budget rose by ten percent.\n"
# Text where encodings disagree: an emoji (two UTF-16 units, four UTF-8 bytes), an accent, CRLF.
chars = st.sampled_from(["a", "b", " ", "\n", "\r\n", "é", "😀", "\t"])
texts = st.lists(chars, max_size=30).map("".join)
times = st.floats(min_value=0, max_value=2e9, allow_nan=False)
uris = st.text(min_size=1, max_size=12)
positions = st.builds(editlog.Position, st.integers(0, 50), st.integers(0, 50))
contents = st.builds(editlog.Content, st.text(max_size=10),
                     st.none() | st.builds(editlog.Range, positions, positions))
records = st.one_of(
    st.builds(editlog.Open, times, uris, st.integers(-5, 10**6), st.text(max_size=40),
              st.sampled_from(editlog.ENCODINGS), st.none() | st.sampled_from(["markdown"])),
    st.builds(editlog.Change, times, uris, st.integers(0, 10**6),
              st.lists(contents, min_size=1, max_size=3).map(tuple)),
    st.builds(editlog.Close, times, uris))


@given(records)
def test_every_record_round_trips_and_matches_the_schema(record):
    line = editlog.dumps(record)
    assert "\n" not in line
    jsonschema.validate(json.loads(line), editlog.schema())
    assert editlog.parse_line(line, 1) == record


@st.composite
def text_and_edit(draw):
    text = draw(texts)
    # Offsets between characters, never between the CR and LF of a CRLF (LSP cannot say that).
    cuts = [i for i in range(len(text) + 1) if not (text[i - 1:i + 1] == "\r\n" and i > 0)]
    start, end = sorted(draw(st.sampled_from(cuts)) for _ in range(2))
    return text, Edit(start, end, draw(texts))


@given(text_and_edit(), st.sampled_from(editlog.ENCODINGS))
def test_an_edit_becomes_a_range_and_back_in_every_encoding(case, encoding):
    text, edit = case
    content = editlog.content_for(text, edit, encoding)
    timeline = editlog.Timeline()
    timeline.apply(editlog.Open(0, "u", 1, text, encoding), 1)
    step = timeline.apply(editlog.Change(0, "u", 2, (content,)), 2)
    assert step.edits == (edit,)
    assert step.text == text[:edit.start] + edit.text + text[edit.end:]


def test_utf16_counts_an_emoji_as_two_units_and_refuses_its_middle():
    text = "a😀b"
    assert editlog.to_offset(text, editlog.Position(0, 3), "utf-16") == 2
    assert editlog.to_offset(text, editlog.Position(0, 5), "utf-8") == 2
    with pytest.raises(ValueError, match="inside a character"):
        editlog.to_offset(text, editlog.Position(0, 2), "utf-16")


def log_lines(*changes: str) -> list[str]:
    opened = editlog.dumps(editlog.Open(0, "file:///a.md", 1, PROSE))
    return [opened, *changes]


def change(version: int, line: int, character: int, text: str = "x") -> str:
    content = editlog.Content(text, editlog.Range.at(line, character))
    return editlog.dumps(editlog.Change(1, "file:///a.md", version, (content,)))


BAD = {
    "truncated": ("".join([change(2, 0, 0), "\n", change(3, 0, 0)[:30]]), 3, "truncated"),
    "unknown field": (change(2, 0, 0).replace('"time"', '"color":1,"time"'), 2,
                      "'color' was unexpected"),
    "out of range": (change(2, 7, 0), 2, "out of range: line 7 is past the end"),
    "past a line's end": (change(2, 0, 40), 2, "past the end of line 0"),
    "backwards": (change(5, 0, 0) + "\n" + change(4, 0, 0), 3, "version 4 of file:///a.md "
                  "goes backwards"),
    "no open": ('{"kind":"close","time":0,"uri":"file:///b.md"}', 2, "is not open"),
    "not an object": ("[1, 2]", 2, "kind is open, change or close"),
    "nested too deeply": ("[" * 100_000 + "]" * 100_000, 2, "nested too deeply"),
    "lone surrogate": (change(2, 0, 0, "a\ud800b").replace("\ud800", "\\ud800"), 2,
                       "changes/0/text holds a lone surrogate"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_log_is_refused_naming_the_line_or_skipped_and_counted(tmp_path, name):
    body, line, message = BAD[name]
    path = tmp_path / "bad.jsonl"
    text = "\n".join(log_lines(body))
    path.write_text(text if name == "truncated" else text + "\n")
    with pytest.raises(editlog.LogError, match=message) as error:
        editlog.read(path)
    assert error.value.line == line and str(error.value).startswith(f"line {line}: ")
    loaded = editlog.read(path, skip_bad=True)
    assert len(loaded.bad) == 1 and loaded.bad[0].line == line
    assert loaded.steps[0].text == PROSE  # the good records are all still there


def test_a_skipped_change_leaves_the_text_as_it_was(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text("\n".join(log_lines(change(2, 9, 0), change(3, 0, 0, "A"))) + "\n")
    loaded = editlog.read(path, skip_bad=True)
    assert [s.line for s in loaded.steps] == [1, 3]
    assert loaded.steps[-1].text == "A" + PROSE


def test_synth_is_reproducible_atomic_and_reaches_its_own_text(tmp_path):
    records = synthesize(PROSE * 3, 200, seed=3, uri="file:///s.md", encoding="utf-16")
    assert records == synthesize(PROSE * 3, 200, seed=3, uri="file:///s.md", encoding="utf-16")
    write(records, tmp_path / "s.jsonl")
    loaded = editlog.read(tmp_path / "s.jsonl")
    assert len(loaded.steps) == 201
    times = [s.record.time for s in loaded.steps]
    assert times == sorted(times)
    for before, step in itertools.pairwise(loaded.steps):
        (edit,) = step.edits  # atomic: a character, or a word, typed, deleted or replaced
        removed = before.text[edit.start:edit.end]
        assert len(edit.text) <= 1 or len(edit.text.split()) == 1
        assert len(removed) <= 1 or len(removed.split()) == 1
    # The cursor stays in bursts: most edits happen right where the previous one ended.
    ends = [(s.edits[0].start, s.edits[0].start + len(s.edits[0].text)) for s in loaded.steps[1:]]
    near = sum(abs(b[0] - a[1]) <= 1 for a, b in itertools.pairwise(ends))
    assert near > len(ends) * 0.6


@given(st.lists(st.sampled_from(["a ", "bb ", "ccc\n", "\n\n", "d "]), max_size=12),
       st.lists(st.sampled_from(["a ", "bb ", "ccc\n", "\n\n", "e "]), max_size=12))
def test_word_edits_turn_one_revision_into_the_next(old, new):
    text, target = "".join(old), "".join(new)
    for edit in word_edits(text, target):
        assert len(edit.text.split()) <= 1
        text = edit.applied(text)
    assert text == target


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                   check=True, capture_output=True)


def test_from_git_types_a_files_history_and_follows_a_rename(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    versions = ["First draft.\n", "First draft, longer now.\n\nA second paragraph.\n",
                "A better first draft.\n\nA second paragraph, edited.\n"]
    (repo / "docs").mkdir()  # a file below the top: git paths are relative to the top
    for i, text in enumerate(versions):
        if i == 2:  # a rename on its own, as git sees renames
            git(repo, "mv", "docs/notes.md", "docs/renamed.md")
            git(repo, "commit", "-q", "-m", "rename")
        (repo / "docs" / ("notes.md" if i < 2 else "renamed.md")).write_text(text)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"v{i}")
    found = revisions(repo / "docs" / "renamed.md", "HEAD")
    assert [text for _, _, text in found] == versions
    write(history_log(found, "file:///notes.md", "utf-8"), tmp_path / "git.jsonl")
    loaded = editlog.read(tmp_path / "git.jsonl")
    assert loaded.steps[0].text == versions[0] and loaded.steps[-1].text == versions[-1]
    assert len(loaded.steps) > 5
