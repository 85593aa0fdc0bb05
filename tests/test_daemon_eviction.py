"""The memory budget evicts segment states, not documents: a real daemon process with a budget
too small for more than the segment being edited.

With every other segment evicted after each pass, every edit reaches an evicted segment, which
the daemon computes again from the text; in exact mode the results must then equal a fresh
full pass in this process, version after version, for two documents edited in turn.
"""

import random

import pytest

from tests.daemon_harness import PROSE, Expected, assert_matches, make_tiny_model, private_dirs
from vqedit.daemon import protocol as wire
from vqedit.daemon.client import DaemonClient

TEXTS = {"a": PROSE + "\n\nThe mayor said the roads come first.\n\nSchools come second.",
         "b": "Rain fell all day.\n\n" + PROSE + "\n\nThe game ended in a draw."}
PARAGRAPHS = {uri: text.count("\n\n") + 1 for uri, text in TEXTS.items()}
WORDS = ["budget", "match", "phone", "rain", "city"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


def test_two_documents_edited_in_turn_under_a_tiny_budget_stay_exact(tiny):
    expected, rng = Expected(tiny), random.Random(0)
    args = tiny.daemon_args("--delta", "0", "--memory-mb", "0.0001", "--compact-after-s", "3600")
    with private_dirs() as paths, DaemonClient(daemon_args=args, paths=paths) as client:
        for uri, text in TEXTS.items():
            client.open(uri, text, 1)
            assert_matches(client.wait_for(uri, 1), expected(text))
        stats = client.stats()
        # Opening b dropped each of a's segments (b's own were just computed: kept).
        assert stats["evictions"] == PARAGRAPHS["a"] and stats["resident_documents"] == 1
        for version in range(2, 12):
            uri = "ab"[version % 2]
            text = client.text(uri)
            at = rng.choice([i for i, c in enumerate(text) if c == " "])
            client.change(uri, version, [wire.WireEdit(at, at, " " + rng.choice(WORDS))])
            results = client.wait_for(uri, version)
            assert results.cost is not None and results.cost.macs > 0
            assert_matches(results, expected(client.text(uri)))
            stats = client.stats()
            # The segment just edited stays; the rest of both documents is evicted.
            assert stats["resident_documents"] == 1 and stats["state_mb"] > 0, stats
        assert stats["restored"] == 10  # every edit reached an evicted segment
        assert stats["evictions"] == PARAGRAPHS["a"] + PARAGRAPHS["b"] + 9
