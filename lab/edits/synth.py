"""`vqedit edits synth`: an edit log of atomic edits made the way a person types.

Usage:
    vqedit edits synth --out demo.jsonl --edits 1000 --articles 2 --seed 0
    vqedit edits synth --out notes.jsonl --text notes.md --edits 300

The starting text is BBC News articles (from `--first`, `--articles` of them, as one Markdown
document with each title as a heading) or the text files named with `--text`, optionally cut to
its first `--paragraphs`. A `Typist` then makes atomic edits (one character or one word
inserted, deleted or replaced) with a cursor that starts at the end of the text and moves as a
person's does: a word typed character by character at one place, a typo and its backspace, a
word deleted or replaced, and now and then a jump to another word. The words typed are the
text's own, or those of twenty BBC articles of one topic (`--words-from sport`), which moves
the labels as the typing goes on. Every edit is one `change` record with its own version;
times advance by typing-like pauses. The same seed gives the same log.
"""

import argparse
import random
import re
import string
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from vqedit.lab.corpus import LABELS, bbc_articles
from vqedit.lsp import editlog
from vqedit.main import CliError
from vqedit.text.edit import Edit

START_TIME = 1_700_000_000.0  # a fixed epoch time, so logs are reproducible byte for byte
_WORD = re.compile(r"\S+")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="the edit log to write")
    parser.add_argument("--edits", type=int, default=1000, help="atomic edits")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--text", type=Path, action="append",
                        help="start from this UTF-8 file (repeat to join several)")
    source.add_argument("--articles", type=int, default=1,
                        help="start from this many BBC News articles")
    parser.add_argument("--first", type=int, default=0, help="index of the first BBC article")
    parser.add_argument("--paragraphs", type=int,
                        help="keep only the first N paragraphs of the starting text")
    parser.add_argument("--words-from", choices=LABELS,
                        help="type words from BBC articles of this topic (default: the text's)")
    parser.add_argument("--uri", default="file:///synth.md", help="the document's URI")
    parser.add_argument("--encoding", choices=editlog.ENCODINGS, default="utf-16",
                        help="position encoding of the log")
    parser.add_argument("--seed", type=int, default=0)


@dataclass
class Typist:
    """Chooses the next atomic edit of a text from where its cursor is, like a person typing.

    The cursor is a code-point offset that stays at a word start or the end of the text
    between words; `pending` is the rest of a word being typed, `typo` a wrong letter typed
    just before the cursor that the next edit takes back.
    """

    rng: random.Random
    vocabulary: list[str]
    cursor: int = 0
    pending: str = ""
    typo: bool = False
    jumps: int = 0  # cursor moves to another place, for the log's summary

    JUMP = 0.08  # a new place per decision between words
    TYPO = 0.03  # per character typed

    def next_edit(self, text: str) -> tuple[Edit, float]:
        """The next edit of `text` and the pause before it, in seconds."""
        self.cursor = min(self.cursor, len(text))
        if self.typo:
            self.typo = False
            self.cursor -= 1
            return Edit(self.cursor, self.cursor + 1, ""), self._pause(0.3, 0.6)
        if self.pending:
            if self.rng.random() < self.TYPO:
                self.typo = True
                letter = self.rng.choice(string.ascii_lowercase)
            else:
                letter, self.pending = self.pending[0], self.pending[1:]
            self.cursor += 1
            return Edit(self.cursor - 1, self.cursor - 1, letter), self._pause(0.06, 0.25)
        pause = 0.0
        words = [m.span() for m in _WORD.finditer(text)]
        if words and self.rng.random() < self.JUMP:
            self.cursor = self.rng.choice(words)[0]
            self.jumps += 1
            pause += self._pause(1.0, 3.0)
        word = next(((s, e) for s, e in words if s == self.cursor), None)
        action = self.rng.random()
        if word is not None and action < 0.1:  # delete the word and the space after it
            start, end = word
            return Edit(start, end + text[end:end + 1].isspace(), ""), pause + 0.5
        if word is not None and action < 0.2:  # replace the word, then go on after it
            start, end = word
            new = self.rng.choice(self.vocabulary)
            self.cursor = start + len(new) + text[end:end + 1].isspace()
            return Edit(start, end, new), pause + self._pause(0.5, 1.5)
        if word is not None and action < 0.25:  # replace one letter of it
            at = self.rng.randrange(*word)
            return Edit(at, at + 1, self.rng.choice(string.ascii_lowercase)), pause + 0.8
        # Type a new word here, one character at a time: this edit is its first character.
        self.pending = self.rng.choice(self.vocabulary) + " "
        return self.next_edit(text)[0], pause + self._pause(0.3, 1.0)

    def _pause(self, low: float, high: float) -> float:
        return self.rng.uniform(low, high)


def bbc_document(first: int, count: int) -> str:
    """BBC articles as one Markdown document: each title a heading, its paragraphs after."""
    articles = bbc_articles()
    if first < 0 or count < 1 or first + count > len(articles):
        raise CliError(f"--first {first} --articles {count} is outside the corpus's "
                       f"{len(articles)} articles")
    parts = []
    for article in articles[first:first + count]:
        title, _, body = article.text.partition("\n")
        paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", body) if p.strip()]
        parts.append("\n\n".join([f"# {title.strip()}", *paragraphs]))
    return "\n\n".join(parts) + "\n"


def vocabulary(text: str) -> list[str]:
    words = sorted({w for w in text.split() if w.isalpha()})
    if not words:
        raise CliError("the starting text has no words to type")
    return words


def synthesize(text: str, edits: int, seed: int, uri: str, encoding: str,
               words: list[str] | None = None) -> list[editlog.Record]:
    """An open record and `edits` one-edit change records typing `words` (default: the text's
    own); deterministic for a seed."""
    typist = Typist(random.Random(seed), words or vocabulary(text), cursor=len(text))
    now = START_TIME
    records: list[editlog.Record] = [editlog.Open(now, uri, 0, text, encoding, "markdown")]
    for version in tqdm(range(1, edits + 1), desc="edits", unit="edit"):
        edit, pause = typist.next_edit(text)
        now = round(now + pause, 3)
        records.append(editlog.Change(now, uri, version,
                                      (editlog.content_for(text, edit, encoding),)))
        text = edit.applied(text)
    return records


def write(records: list[editlog.Record], path: Path) -> None:
    """Write a new log (replacing the file), by rename so a reader never sees half of it."""
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    with editlog.Writer(partial) as log:
        for record in records:
            log.write(record)
    partial.replace(path)


def run(args: argparse.Namespace) -> int:
    if args.edits < 1:
        raise CliError(f"--edits must be ≥ 1, got {args.edits}")
    if args.text:
        from vqedit.classify import read_text

        text = "\n\n".join(read_text(str(p)) for p in args.text)
    else:
        text = bbc_document(args.first, args.articles)
    if args.paragraphs is not None:
        if args.paragraphs < 1:
            raise CliError(f"--paragraphs must be ≥ 1, got {args.paragraphs}")
        text = "\n\n".join(re.split(r"\n\s*\n", text.strip())[:args.paragraphs]) + "\n\n"
    words = None
    if args.words_from:  # the same articles every time, so the log stays reproducible
        topic = [a.text for a in bbc_articles() if a.label == args.words_from][:20]
        words = vocabulary(" ".join(topic))
    write(synthesize(text, args.edits, args.seed, args.uri, args.encoding, words), args.out)
    print(f"wrote {args.edits} edits of {args.uri} to {args.out}")
    return 0
