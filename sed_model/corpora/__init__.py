"""Corpus loaders: each yields sorted (audio path, label, speaker[, session]) utterances.

Use ``load_corpus(name, data_dir)`` as the single entry point: it returns the corpus (its
``classes`` final, also for a CSV manifest) and its utterances.

Each loader states its folder layout, classes and default protocol in its own module and
attributes (``data_hint``, ``classes``, ``default_protocol``); the README's corpus table
(and docs/usage.md, "Corpora and folds") lists them for users, and tests/test_corpora.py
checks the README's table against the loaders.
"""

import importlib
from collections.abc import Sequence
from pathlib import Path

from sed_model.corpora.base import Corpus, Utterance
from sed_model.errors import CorpusError

__all__ = ["CORPUS_NAMES", "Corpus", "Utterance", "get_corpus", "load_corpus"]

_MODULES = {
    "emodb": "emodb",
    "ravdess": "ravdess",
    "cremad": "cremad",
    "iemocap": "iemocap",
    "iemocap4": "iemocap4",
    "enterface": "enterface",
    "csv": "csv_manifest",
    "demo": "demo",
}
CORPUS_NAMES: tuple[str, ...] = tuple(_MODULES)


def get_corpus(name: str) -> Corpus:
    """The loader of corpus ``name``; a CSV manifest gets a fresh loader each call."""
    if name not in _MODULES:
        raise CorpusError(f"unknown corpus {name!r}; expected one of {', '.join(CORPUS_NAMES)}")
    module = importlib.import_module(f"sed_model.corpora.{_MODULES[name]}")
    return module.CsvManifest() if name == "csv" else module.CORPUS


def load_corpus(
    name: str, data_dir: str | Path | None = None, *, classes: Sequence[str] | None = None
) -> tuple[Corpus, list[Utterance]]:
    """(corpus, utterances sorted by path). data_dir: the loader's ``data_hint`` (None only for
    demo).
    classes: for "csv" only, the allowed labels in logit order (default: sorted labels seen)."""
    if classes is not None and name != "csv":
        raise CorpusError(
            f"classes can only be given for the csv corpus; {name!r} has fixed classes"
        )
    corpus = get_corpus(name)
    if classes is not None:
        corpus = type(corpus)(classes)
    utterances = corpus.utterances(Path(data_dir) if data_dir is not None else None)
    return corpus.for_utterances(utterances), utterances
