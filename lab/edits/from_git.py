"""`vqedit edits from-git FILE`: a file's git history as a typing-like edit log.

Usage:
    vqedit edits from-git README.md --out readme.jsonl [--rev HEAD] [--max-revisions 50]

The log opens the file as it was in its first commit (following renames) and turns every later
revision into atomic edits: `difflib` matches the two revisions word by word (a word with the
white space after it), and every differing word becomes one edit — a word replaced by a word,
then the remaining old words deleted or new words typed, left to right, the way someone
revising the text would go through it. Edits of one revision take the commit's time, a tenth of
a second apart. The text after the last edit equals the file at `--rev`.
"""

import argparse
import difflib
import re
import subprocess
from pathlib import Path

from vqedit.lab.edits.synth import write
from vqedit.lsp import editlog
from vqedit.main import CliError
from vqedit.text.edit import Edit

_WORDS = re.compile(r"\s+|\S+\s*")  # leading white space alone, then words with their spaces
KEYSTROKE_S = 0.1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="a file in a git repository")
    parser.add_argument("--out", type=Path, required=True, help="the edit log to write")
    parser.add_argument("--rev", default="HEAD", help="the newest revision to use")
    parser.add_argument("--max-revisions", type=int, default=0,
                        help="use only the newest N revisions (0: all)")
    parser.add_argument("--uri", help="the document's URI (default: the file's file:// URI)")
    parser.add_argument("--encoding", choices=editlog.ENCODINGS, default="utf-16")


def revisions(path: Path, rev: str) -> list[tuple[str, float, str]]:
    """(commit, commit time, text) of every revision that changed `path`'s text, oldest
    first."""
    path = path.resolve()
    if not path.parent.is_dir():
        raise CliError(f"no such directory: {path.parent}")
    top = _git(path.parent, "rev-parse", "--show-toplevel").strip()
    relative = path.relative_to(Path(top).resolve()).as_posix()
    log = _git(Path(top), "log", "--follow", "--format=%x00%H %ct", "--name-only", rev, "--",
               relative)
    found, name = [], relative
    for chunk in log.split("\0")[1:]:
        header, *names = [line for line in chunk.split("\n") if line.strip()]
        commit, time = header.split()
        name = names[0] if names else name  # the file's name in that commit (renames)
        try:
            data = subprocess.run(["git", "show", f"{commit}:{name}"], cwd=top,
                                  check=True, capture_output=True).stdout
            text = data.decode("utf-8")
        except (subprocess.CalledProcessError, UnicodeDecodeError):
            continue  # deleted in this commit, or not UTF-8 text then: nothing to type
        found.append((commit, float(time), text))
    if not found:
        raise CliError(f"{relative} has no history at {rev}")
    found.reverse()
    # A rename or a mode change alone leaves the text as it was: nothing to type.
    return [r for i, r in enumerate(found) if i == 0 or r[2] != found[i - 1][2]]


def _git(cwd: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                              text=True).stdout
    except FileNotFoundError:
        raise CliError("git is not installed") from None
    except subprocess.CalledProcessError as e:
        raise CliError(f"git {args[0]} failed: {e.stderr.strip()}") from None


def word_edits(old: str, new: str) -> list[Edit]:
    """Atomic word edits that turn `old` into `new`, each on the text the previous one left."""
    a, b = _WORDS.findall(old), _WORDS.findall(new)
    edits, shift = [], 0  # shift: how much earlier edits moved old offsets
    starts = [0]
    for word in a:
        starts.append(starts[-1] + len(word))
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        at = starts[i1] + shift
        pairs = min(i2 - i1, j2 - j1)
        for k in range(pairs):  # word for word
            edits.append(Edit(at, at + len(a[i1 + k]), b[j1 + k]))
            at += len(b[j1 + k])
        for k in range(i1 + pairs, i2):  # old words left over
            edits.append(Edit(at, at + len(a[k]), ""))
        for k in range(j1 + pairs, j2):  # new words left over
            edits.append(Edit(at, at, b[k]))
            at += len(b[k])
        shift += sum(map(len, b[j1:j2])) - sum(map(len, a[i1:i2]))
    return edits


def history_log(found: list[tuple[str, float, str]], uri: str,
                encoding: str) -> list[editlog.Record]:
    _, time, text = found[0]
    records: list[editlog.Record] = [editlog.Open(time, uri, 0, text, encoding)]
    version = 0
    for _, commit_time, new in found[1:]:
        time = max(time, commit_time)
        for edit in word_edits(text, new):
            version += 1
            time = round(time + KEYSTROKE_S, 3)
            records.append(editlog.Change(time, uri, version,
                                          (editlog.content_for(text, edit, encoding),)))
            text = edit.applied(text)
        if text != new:
            raise AssertionError("word edits did not reproduce the revision")  # a bug here
    return records


def run(args: argparse.Namespace) -> int:
    if args.max_revisions < 0:
        raise CliError(f"--max-revisions must be ≥ 0, got {args.max_revisions}")
    found = revisions(args.file, args.rev)
    if args.max_revisions:
        found = found[-args.max_revisions:]
    records = history_log(found, args.uri or args.file.resolve().as_uri(), args.encoding)
    write(records, args.out)
    print(f"wrote {len(records) - 1} edits over {len(found)} revisions of {args.file} "
          f"to {args.out}")
    return 0
