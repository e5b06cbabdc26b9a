"""What every corpus loader gives: a class list, a default protocol and sorted utterances."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sed_model.errors import CorpusError, DataWarning


@dataclass(frozen=True)
class Utterance:
    """One labelled recording.

    path: the audio file (.wav; .avi for eNTERFACE'05). label: one of the corpus' classes.
    speaker: speaker id (speaker-independent splits group by it). session: the recording
    session for leave-one-session-out (IEMOCAP "Ses01".."Ses05"), else None.
    """

    path: Path
    label: str
    speaker: str
    session: str | None = None


class Corpus:
    """Base of the corpus loaders; each module exposes one instance as ``CORPUS``.

    name: the name given to ``load_corpus``/``--corpus``; title: its usual spelling. classes:
    the fixed class order used for logits and confusion matrices. default_protocol: the split
    used when none is asked for. data_hint: which folder to pass as ``data_dir`` (shown in
    errors and the README).
    """

    name: str = ""
    title: str = ""  # the corpus' usual spelling, for messages
    classes: tuple[str, ...] = ()
    default_protocol: str = "loso"
    data_hint: str = ""

    def utterances(self, data_dir: Path | None) -> list[Utterance]:
        """The corpus' utterances, sorted by path; CorpusError for a missing or foreign folder."""
        raise NotImplementedError

    def for_utterances(self, utterances: Sequence[Utterance]) -> Corpus:
        """The loader that describes ``utterances`` read by this one: itself for a corpus of
        fixed classes and protocol (a CSV manifest's depend on what it lists)."""
        return self

    def require_dir(self, data_dir: Path | None) -> Path:
        """``data_dir`` as a resolved folder, or a CorpusError saying which folder is expected."""
        if data_dir is None:
            raise CorpusError(
                f"corpus {self.name!r} needs a data folder (--data): {self.data_hint}"
            )
        data_dir = Path(data_dir).expanduser()
        if not data_dir.is_dir():
            raise CorpusError(
                f"data folder {data_dir} does not exist or is not a folder; "
                f"expected {self.data_hint}"
            )
        return data_dir

    def __repr__(self) -> str:
        return f"<corpus {self.name}, default protocol {self.default_protocol}>"


def sorted_utterances(utterances: Iterable[Utterance]) -> list[Utterance]:
    return sorted(utterances, key=lambda u: str(u.path))


def scan_named_files(
    root: Path,
    suffix: str,
    pattern: re.Pattern[str],
    corpus: Corpus,
    expected_name: str,
    make: Callable[[Path, re.Match[str]], Utterance | None],
) -> list[Utterance]:
    """Utterances from the files below ``root`` whose name matches ``pattern`` (labels coded in
    the file name: EmoDB, RAVDESS, CREMA-D). ``make`` returns None for a file to leave out
    quietly (e.g. RAVDESS song); files with the suffix whose name does not match are counted
    in one warning. No matching file at all -> CorpusError naming the expected layout."""
    utterances, foreign = [], []
    for path in sorted(root.rglob(f"*{suffix}")):
        if path.name.startswith("._") or not path.is_file():  # macOS resource forks
            continue
        match = pattern.fullmatch(path.name)
        if match is None:
            foreign.append(path)
            continue
        utterance = make(path, match)
        if utterance is not None:
            utterances.append(utterance)
    if not utterances:
        raise CorpusError(
            f"no {corpus.title} files ({expected_name}) found in {root}; "
            f"expected {corpus.data_hint}"
        )
    if foreign:
        warnings.warn(
            f"{corpus.title}: ignored {len(foreign)} {suffix} files whose names do not follow "
            f"{expected_name} (e.g. {foreign[0]})",
            DataWarning,
            stacklevel=3,
        )
    return sorted_utterances(utterances)
