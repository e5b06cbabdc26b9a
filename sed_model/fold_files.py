"""Official test folds read from files: ``--folds PATH``.

PATH is one of:

- a folder of EmoBox test-fold lists, ``<name>_test_fold_K.jsonl`` (K = 1, 2, ...): one JSON
  object per line; the speaker is the last ``-``-separated field of ``key`` (EmoBox's RAVDESS
  key ``ravdess-03-01-07-02-02-02-11`` is actor ``11``) and the file is the last part of
  ``wav``. Fold K's test set is every speaker listed in its file. Files of the folder that
  do not match the pattern (a README) are ignored.
- a CSV file with a header and (at least) the columns ``speaker`` and ``fold``: one row per
  test speaker, ``fold`` naming the fold that tests it. Folds are taken in numeric order when
  every fold value is an integer, else in order of first appearance.

Each fold's test set is exactly the listed speakers and its training set every other speaker
of the corpus (speakers listed in no fold always train). A speaker may be listed in one fold
only. Checked against the corpus (:func:`check_against_corpus`): every listed speaker must be
in it, and a listed file that the corpus holds must belong to the speaker its line names
(matched by file name; names the corpus holds more than once are not checked). Listed files
the corpus does not hold (left out, or skipped as unusable) give one warning with their
count, since the speakers, not the files, define the folds.

Every problem is a :class:`~sed_model.errors.SedError` whose one line names the file (and
line) and what was expected.
"""

from __future__ import annotations

import csv
import json
import re
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .corpora.base import Utterance
from .errors import DataWarning, SedError

JSONL_PATTERN = re.compile(r".+_test_fold_(\d+)\.jsonl")
CSV_COLUMNS = ("speaker", "fold")
EXPECTED = ("a folder of EmoBox *_test_fold_K.jsonl files or a CSV file with speaker,fold "
            "columns")


@dataclass(frozen=True)
class ListedFile:
    """A file named by a fold list: its name, the speaker its line gives, where it is listed."""

    name: str
    speaker: str
    where: str  # "path:line"


@dataclass(frozen=True)
class ListedFold:
    """One fold of a fold file: its name, its test speakers and (EmoBox lists) its files."""

    name: str
    source: str  # the file that lists it
    speakers: tuple[str, ...]
    files: tuple[ListedFile, ...] = ()


def is_fold_path(text: str | None) -> bool:
    """Whether a ``--folds`` value names a fold file rather than a protocol: it exists, ends
    in ``.csv`` or names a folder (holds a path separator)."""
    if text is None:
        return False
    text = str(text)
    return "/" in text or "\\" in text or text.lower().endswith(".csv") or Path(text).exists()


def read_fold_path(path: str | Path) -> list[ListedFold]:
    """The folds of a fold folder or CSV file (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        return read_jsonl_folder(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return read_fold_csv(path)
    if not path.exists():
        raise SedError(f"--folds {path}: no such file or folder; expected {EXPECTED}")
    raise SedError(f"--folds {path}: not understood; expected {EXPECTED}")


def read_jsonl_folder(folder: Path) -> list[ListedFold]:
    """The folds of a folder of ``*_test_fold_K.jsonl`` files, in the order of K."""
    numbered = sorted((int(m[1]), p) for p in folder.iterdir()
                      if (m := JSONL_PATTERN.fullmatch(p.name)) and p.is_file())
    if not numbered:
        raise SedError(f"--folds {folder}: no fold files (*_test_fold_K.jsonl) in this folder; "
                       f"expected {EXPECTED}")
    numbers = [k for k, _ in numbered]
    if len(set(numbers)) != len(numbers):
        twice = next(k for k in numbers if numbers.count(k) > 1)
        raise SedError(f"--folds {folder}: fold {twice} has several files "
                       f"({', '.join(p.name for k, p in numbered if k == twice)}); "
                       "expected one *_test_fold_K.jsonl per fold")
    folds = [_read_jsonl_fold(path, f"fold {k}") for k, path in numbered]
    _check_disjoint(folds)
    return folds


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SedError(f"fold file {path} cannot be read ({error}); expected UTF-8 text") from None


def _read_jsonl_fold(path: Path, name: str) -> ListedFold:
    files = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if line.strip():
            files.append(_jsonl_entry(line, f"{path}:{number}"))
    if not files:
        raise SedError(f"fold file {path}: {name} is empty (no test files listed); expected "
                       "one JSON object per line with 'key' and 'wav'")
    speakers = tuple(dict.fromkeys(f.speaker for f in files))
    return ListedFold(name, str(path), speakers, tuple(files))


def _jsonl_entry(line: str, where: str) -> ListedFile:
    """One EmoBox line: the speaker from ``key``'s last field, the file name from ``wav``."""
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as error:
        raise SedError(f"fold file {where}: not a JSON line ({error.msg}); expected one JSON "
                       "object with 'key' and 'wav'") from None
    if not isinstance(entry, dict):
        raise SedError(f"fold file {where}: a JSON {type(entry).__name__}, not an object; "
                       "expected one JSON object with 'key' and 'wav'")
    missing = [k for k in ("key", "wav") if not isinstance(entry.get(k), str) or not entry[k]]
    if missing:
        raise SedError(f"fold file {where}: no {' or '.join(repr(k) for k in missing)}; "
                       "expected 'key' (ending in the speaker id) and 'wav' (the file)")
    speaker = entry["key"].rsplit("-", 1)[-1].strip()
    if not speaker:
        raise SedError(f"fold file {where}: key {entry['key']!r} ends without a speaker id; "
                       "expected a key such as ravdess-03-01-07-02-02-02-11")
    name = PurePosixPath(entry["wav"].replace("\\", "/")).name
    return ListedFile(name, speaker, where)


def read_fold_csv(path: Path) -> list[ListedFold]:
    """The folds of a CSV file with ``speaker`` and ``fold`` columns."""
    rows = list(csv.reader(_read_text(path).splitlines()))
    if not rows:
        raise SedError(f"fold file {path} is empty; expected a header with the columns "
                       "speaker,fold and one row per test speaker")
    header = [c.strip().lower() for c in rows[0]]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise SedError(f"fold file {path}: no column {' or '.join(missing)} in its header "
                       f"{','.join(rows[0])!r}; expected the columns speaker,fold")
    speaker_col, fold_col = (header.index(c) for c in CSV_COLUMNS)
    members: dict[str, list[str]] = defaultdict(list)
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = [row[i].strip() if i < len(row) else "" for i in (speaker_col, fold_col)]
        if not all(cells):
            raise SedError(f"fold file {path}:{number}: no {CSV_COLUMNS[cells.index('')]} "
                           "value; expected a speaker and its fold on every row")
        members[cells[1]].append(cells[0])
    if not members:
        raise SedError(f"fold file {path}: no folds (a header and no rows); expected one row "
                       "per test speaker")
    names = list(members)
    if all(re.fullmatch(r"\d+", n) for n in names):
        names.sort(key=int)
    folds = [ListedFold(f"fold {n}", str(path), tuple(dict.fromkeys(members[n])))
             for n in names]
    _check_disjoint(folds)
    return folds


def _check_disjoint(folds: Sequence[ListedFold]) -> None:
    first: dict[str, ListedFold] = {}
    for fold in folds:
        for speaker in fold.speakers:
            if speaker in first:
                raise SedError(f"fold file {fold.source}: speaker {speaker} is listed in "
                               f"{first[speaker].name} and in {fold.name}; expected every "
                               "speaker in one test fold at most")
            first[speaker] = fold


def check_against_corpus(folds: Sequence[ListedFold], utterances: Sequence[Utterance]) -> None:
    """:class:`SedError` for a listed speaker missing from the corpus or a listed file that
    the corpus gives to another speaker; one warning for listed files the corpus lacks."""
    known = {u.speaker for u in utterances}
    for fold in folds:
        for speaker in fold.speakers:
            if speaker not in known:
                raise SedError(f"fold file {fold.source}: {fold.name} lists speaker {speaker!r}, "
                               f"which is not in the corpus (its {len(known)} speakers: "
                               f"{_some(sorted(known))})")
    owners: dict[str, set[str]] = defaultdict(set)
    for u in utterances:
        owners[Path(u.path).name].add(u.speaker)
    absent = []
    for listed in (f for fold in folds for f in fold.files):
        speakers = owners.get(listed.name)
        if not speakers:
            absent.append(listed)
        elif len(speakers) == 1 and listed.speaker not in speakers:
            raise SedError(f"fold file {listed.where}: {listed.name} is listed for speaker "
                           f"{listed.speaker}, but the corpus loader gives it to speaker "
                           f"{next(iter(speakers))}; expected the fold lists of this corpus")
    if absent:
        warnings.warn(f"{len(absent)} file(s) listed in the fold files are not in the corpus "
                      f"(first: {absent[0].name} at {absent[0].where}); their speakers' other "
                      "files are tested as listed", DataWarning, stacklevel=2)


def _some(names: list[str], shown: int = 12) -> str:
    return ", ".join(names[:shown]) + (f", ... ({len(names) - shown} more)"
                                       if len(names) > shown else "")
