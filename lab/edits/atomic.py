"""Atomic edits as a person makes them: one word or one character inserted, deleted or replaced.

Benchmarks and synthetic edit logs draw them at random; each is a plain `Edit`.
"""

import random
import re
import string

from vqedit.text.edit import Edit

KINDS = ("insert", "delete", "replace")
_WORD = re.compile(r"\S+")


def random_edit(text: str, rng: random.Random, kinds: tuple[str, ...], vocabulary: list[str]
                ) -> Edit:
    """One atomic edit of `text` of a kind drawn from `kinds`, at a random word.

    Inserted and replacing words come from `vocabulary`; characters are lowercase letters.
    An empty text can only be inserted into.
    """
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"edit kinds must be among {KINDS}, got {kinds}")
    words = [m.span() for m in _WORD.finditer(text)]
    kind = rng.choice(kinds) if words else "insert"
    by_word = rng.random() < 0.5 or not words
    if by_word:
        if kind == "insert":
            at = rng.choice(words)[0] if words else 0
            return Edit(at, at, rng.choice(vocabulary) + (" " if words else ""))
        start, end = rng.choice(words)
        if kind == "delete":
            end += text[end:end + 1].isspace()  # the word and the space after it
            return Edit(start, end, "")
        return Edit(start, end, rng.choice(vocabulary))
    start, end = rng.choice(words)
    at = rng.randrange(start, end + (kind == "insert"))
    letter = rng.choice(string.ascii_lowercase)
    if kind == "insert":
        return Edit(at, at, letter)
    return Edit(at, at + 1, "" if kind == "delete" else letter)
