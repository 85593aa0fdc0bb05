import os

import pytest
from hypothesis import HealthCheck, settings
from transformers import PreTrainedTokenizerFast

from tests.daemon_harness import Expected, TinyModel, make_tiny_model
from tests.tiny import byte_level_bpe, tiny_opt
from vqedit.engine.checkpoint import LoadedModel, load
from vqedit.engine.tokens import Tokenizer

# Model forwards are slow next to hypothesis's default deadline; the CI profile never changes
# its examples from run to run, so a red CI is reproducible.
settings.register_profile("dev", deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.register_profile("ci", parent=settings.get_profile("dev"), derandomize=True,
                          print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> TinyModel:
    """A tiny student, head and base on disk for daemon tests; one per module, as some tests
    rewrite them. Modules testing the engine define their own `tiny`."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def expected(tiny) -> Expected:
    return Expected(tiny)


@pytest.fixture(scope="session")
def minilm() -> LoadedModel:
    return load()


@pytest.fixture(scope="session")
def wordpiece(minilm) -> Tokenizer:
    return minilm.tokenizer


@pytest.fixture(scope="session")
def bpe() -> Tokenizer:
    return Tokenizer.from_backend(byte_level_bpe())


@pytest.fixture(scope="session")
def opt_base(tmp_path_factory):
    """A tiny random OPT with a byte-level BPE on disk: a base for `vqedit train distill`."""
    path = tmp_path_factory.mktemp("tiny-opt")
    tiny_opt().save_pretrained(path)
    PreTrainedTokenizerFast(tokenizer_object=byte_level_bpe(), bos_token="</s>",
                            eos_token="</s>", pad_token="<pad>").save_pretrained(path)
    return path
