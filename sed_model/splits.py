"""Speaker-independent evaluation splits.

Every protocol keeps each speaker on one side of every fold (no speaker is ever both trained
and tested on), and every training side must hold files of at least two classes.

- "loso": leave-one-speaker-out, one fold per speaker (sorted by speaker id; scikit-learn's
  ``LeaveOneGroupOut``); every utterance is tested exactly once.
- "loso-session": leave-one-session-out (IEMOCAP: 5 folds, one per session, holding both of
  its speakers); needs ``Utterance.session``.
- "kfold": k speaker-grouped folds (default k = 5; scikit-learn's ``GroupKFold``). Speakers
  are placed largest first into the fold with the fewest utterances so far, so folds are
  balanced in utterances; speakers of equal size in a ``seed``-shuffled order. Every
  utterance is tested exactly once.
- "holdout": one fold; test speakers are drawn in a ``seed``-shuffled order until they hold at
  least 20% of the utterances (at least one speaker, at least one left for training).
- "enterface-paper": the paper's eNTERFACE'05 hold-out of 260 test utterances (of 1260; the
  paper does not say which). Ours is speaker-disjoint and deterministic: subjects are taken in
  a ``seed``-shuffled order and, if some subset of whole subjects holds exactly 260 utterances,
  the first such subset in that order is the test set (found by a subset-sum search).
  Otherwise whole subjects are taken in that order while they fit, and the rest of the 260
  comes from the next subject, picked class by class in turn; that subject's other utterances
  are used on neither side, so no speaker is on both sides.
- "default": the corpus' own default protocol (pass ``corpus=``).

:func:`with_validation_speakers` then carves validation speakers out of a fold's training
side, so that a checkpoint can be selected without looking at the test speakers.

- a fold file or folder (``--folds PATH``): official test folds, each testing exactly the
  speakers it lists and training on every other speaker; EmoBox ``*_test_fold_K.jsonl`` lists
  or a CSV with ``speaker,fold`` columns (see :mod:`sed_model.fold_files`).

The command-line forms of ``--folds`` ("loso", "<K>", "holdout", "session", "paper",
"default", PATH) are read by :func:`parse_folds_arg`; ``make_folds`` accepts them too.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut

from sed_model.corpora.base import Corpus, Utterance
from sed_model.errors import SedError
from sed_model.fold_files import check_against_corpus, is_fold_path, read_fold_path

PROTOCOLS = ("loso", "loso-session", "kfold", "holdout", "enterface-paper", "default")
FOLD_FILE = "file"  # the protocol of a --folds PATH
ENTERFACE_PAPER_TEST_SIZE = 260
HOLDOUT_TEST_FRACTION = 0.2
DEFAULT_K = 5
_CLI_FORMS = {
    "loso": "loso",
    "session": "loso-session",
    "holdout": "holdout",
    "paper": "enterface-paper",
    "default": "default",
}


@dataclass(frozen=True)
class Fold:
    """One train/test division; indices into the utterance list given to ``make_folds``."""

    name: str  # e.g. "speaker 03", "Ses01", "fold 2/5", "holdout", "enterface-paper"
    train: tuple[int, ...]
    test: tuple[int, ...]
    validation: tuple[int, ...] = ()  # held out of train to select a checkpoint; see below


def parse_folds_arg(text: str) -> tuple[str, int | None]:
    """``--folds`` value -> (protocol, k): "loso", "<K>" (speaker-grouped K folds), "holdout",
    "session" (leave-one-session-out), "paper" (eNTERFACE 260-utterance hold-out), "default";
    the protocol names themselves are accepted too. A fold file or folder (a value that
    exists, ends in .csv or holds a path separator) gives ``("file", None)``."""
    name = str(text).strip().lower()
    if re.fullmatch(r"\d+", name):
        return "kfold", int(name)
    if name in _CLI_FORMS:
        return _CLI_FORMS[name], None
    if name in PROTOCOLS:
        return name, None
    if is_fold_path(text):
        return FOLD_FILE, None
    raise SedError(
        f"--folds {name!r} is not understood; expected loso, an integer K (speaker-grouped folds), "
        "holdout, session, paper, default or the path of a fold folder or CSV file"
    )


def make_folds(
    utterances: Sequence[Utterance],
    protocol: str,
    *,
    seed: int = 0,
    k: int | None = None,
    corpus: Corpus | None = None,
) -> list[Fold]:
    """Speaker-independent folds of ``utterances`` under ``protocol`` (see the module docstring)."""
    if not utterances:
        raise SedError(
            "cannot make folds of an empty utterance list; expected at least two speakers' files"
        )
    parsed, parsed_k = parse_folds_arg(protocol)
    k = k if k is not None else parsed_k
    if parsed == FOLD_FILE:
        return listed_folds(utterances, protocol)
    if parsed == "default":
        if corpus is None:
            raise SedError("protocol 'default' needs the corpus (make_folds(..., corpus=corpus))")
        parsed = corpus.default_protocol
    speakers = [u.speaker for u in utterances]
    if parsed == "loso":
        folds = _leave_one_group_out(speakers, "speaker")
    elif parsed == "loso-session":
        missing = [u.path for u in utterances if not u.session]
        if missing:
            raise SedError(
                f"protocol loso-session needs a session for every utterance; {missing[0]} has none "
                f"({len(missing)} without); use loso or kfold instead"
            )
        folds = _leave_one_group_out([u.session for u in utterances], "")
    elif parsed == "kfold":
        folds = _speaker_kfold(speakers, DEFAULT_K if k is None else k, seed)
    elif parsed == "holdout":
        folds = [_holdout(speakers, seed)]
    elif parsed == "enterface-paper":
        folds = [
            _fixed_size_holdout(utterances, ENTERFACE_PAPER_TEST_SIZE, seed, "enterface-paper")
        ]
    else:
        raise SedError(f"protocol {protocol!r} is unknown; expected one of {', '.join(PROTOCOLS)}")
    for fold in folds:
        _check(fold, utterances)
    return folds


def listed_folds(utterances: Sequence[Utterance], path: str) -> list[Fold]:
    """The folds of a fold file or folder (:mod:`sed_model.fold_files`): each tests exactly
    its listed speakers and trains on every other speaker of ``utterances``."""
    listed = read_fold_path(path)
    check_against_corpus(listed, utterances)
    speakers = [u.speaker for u in utterances]
    folds = [_split_by_speakers(speakers, set(f.speakers), f.name) for f in listed]
    for fold in folds:
        _check(fold, utterances)
    return folds


def with_validation_speakers(
    fold: Fold, utterances: Sequence[Utterance], k: int, *, seed: int = 0
) -> Fold:
    """``fold`` with ``k`` of its training speakers moved to a validation side.

    Which speakers: all speakers of ``utterances`` are shuffled once with ``seed``; the fold
    walks that order (wrapping around) from just after its last test speaker and takes the
    first ``k`` speakers that are on its training side. So the choice depends only on the
    seed and the fold, and rotates: under leave-one-speaker-out with ``k = 1`` every speaker
    validates exactly one fold (the one testing its predecessor in the shuffled order).
    ``k = 0`` returns ``fold`` unchanged. Raises
    :class:`SedError` when fewer than one training speaker would remain or when the
    remaining training side holds a single class.
    """
    if k < 0:
        raise SedError(f"validation speakers must be 0 or more; got {k}")
    if k == 0:
        return fold
    train_speakers = {utterances[i].speaker for i in fold.train}
    if k >= len(train_speakers):
        raise SedError(
            f"fold {fold.name}: {k} validation speaker(s) would leave no training speaker "
            f"(the training side has {len(train_speakers)}); use --set "
            f"validation_speakers={len(train_speakers) - 1} or less, or 0 to select nothing"
        )
    order = _shuffled_speakers([u.speaker for u in utterances], seed)
    start = 1 + max(order.index(utterances[i].speaker) for i in fold.test)
    walk = [order[(start + j) % len(order)] for j in range(len(order))]
    chosen = set([s for s in walk if s in train_speakers][:k])
    carved = Fold(
        fold.name,
        tuple(i for i in fold.train if utterances[i].speaker not in chosen),
        fold.test,
        tuple(i for i in fold.train if utterances[i].speaker in chosen),
    )
    classes = {utterances[i].label for i in carved.train}
    if len(classes) < 2:
        raise SedError(
            f"fold {fold.name}: holding out validation speaker(s) {', '.join(sorted(chosen))} "
            f"leaves only class {next(iter(classes))!r} for training; expected at least two "
            "classes (use fewer validation_speakers, or 0)"
        )
    return carved


def _leave_one_group_out(groups: Sequence[str], prefix: str) -> list[Fold]:
    """One fold per group, in sorted order (scikit-learn's :class:`LeaveOneGroupOut`)."""
    names = np.unique(np.asarray(groups))
    if len(names) < 2:
        raise SedError(
            f"leave-one-out needs at least two {prefix or 'session'}s; "
            f"found only {str(names[0])!r}"
        )
    splits = LeaveOneGroupOut().split(np.zeros(len(groups)), groups=groups)
    return [
        _fold(f"{prefix} {name}".strip(), train, test) for name, (train, test) in zip(names, splits)
    ]


def _fold(name: str, train: np.ndarray, test: np.ndarray) -> Fold:
    return Fold(name, tuple(train.tolist()), tuple(test.tolist()))


def _shuffled_speakers(speakers: Sequence[str], seed: int) -> list[str]:
    names = sorted(set(speakers))
    order = np.random.default_rng(seed).permutation(len(names))
    return [names[i] for i in order]


def _split_by_speakers(speakers: Sequence[str], test_speakers: set[str], name: str) -> Fold:
    return Fold(
        name,
        tuple(i for i, s in enumerate(speakers) if s not in test_speakers),
        tuple(i for i, s in enumerate(speakers) if s in test_speakers),
    )


def _speaker_kfold(speakers: Sequence[str], k: int, seed: int) -> list[Fold]:
    """K speaker-grouped folds balanced in utterances (scikit-learn's :class:`GroupKFold`:
    largest speaker first into the fold with the fewest utterances so far, the lowest fold
    number among equals). Speakers of equal size go in a ``seed``-shuffled order: GroupKFold
    takes equal groups in decreasing group number, so each speaker's number is its place in
    that order counted from the end."""
    order = _shuffled_speakers(speakers, seed)
    if not 2 <= k <= len(order):
        raise SedError(
            f"{k} speaker-grouped folds are impossible with {len(order)} speakers; "
            f"expected 2 <= K <= {len(order)}"
        )
    number = {speaker: len(order) - 1 - place for place, speaker in enumerate(order)}
    groups = np.array([number[s] for s in speakers])
    splits = GroupKFold(n_splits=k).split(np.zeros(len(speakers)), groups=groups)
    return [_fold(f"fold {f + 1}/{k}", train, test) for f, (train, test) in enumerate(splits)]


def _holdout(speakers: Sequence[str], seed: int) -> Fold:
    order = _shuffled_speakers(speakers, seed)
    if len(order) < 2:
        raise SedError(
            f"a speaker-independent hold-out needs at least two speakers; found only {order[0]!r}"
        )
    counts = Counter(speakers)
    target = HOLDOUT_TEST_FRACTION * len(speakers)
    test, held = set(), 0
    for speaker in order[:-1]:
        test.add(speaker)
        held += counts[speaker]
        if held >= target:
            break
    return _split_by_speakers(speakers, test, "holdout")


def _exact_subset(sizes: list[int], target: int) -> list[int] | None:
    """Indices of the subset of ``sizes`` summing to ``target`` that is first in order
    (lexicographically smallest index list), or None."""
    # reachable[i][s]: sizes[i:] can make s exactly
    reachable = np.zeros((len(sizes) + 1, target + 1), dtype=bool)
    reachable[len(sizes), 0] = True
    for i in range(len(sizes) - 1, -1, -1):
        reachable[i] = reachable[i + 1]
        if sizes[i] <= target:
            reachable[i, sizes[i] :] |= reachable[i + 1, : target + 1 - sizes[i]]
    if not reachable[0, target]:
        return None
    chosen, remaining = [], target
    for i, size in enumerate(sizes):
        if remaining == 0:
            break
        if size <= remaining and reachable[i + 1, remaining - size]:
            chosen.append(i)
            remaining -= size
    return chosen


def _fixed_size_holdout(
    utterances: Sequence[Utterance], test_size: int, seed: int, name: str
) -> Fold:
    speakers = [u.speaker for u in utterances]
    counts = Counter(speakers)
    order = _shuffled_speakers(speakers, seed)
    if len(utterances) <= test_size or len(order) < 2:
        raise SedError(
            f"the {name} protocol holds out {test_size} test utterances of whole speakers; "
            f"the corpus has {len(utterances)} utterances of {len(order)} speakers "
            "(expected eNTERFACE'05: about 1260 of 43)"
        )
    chosen = _exact_subset(
        [counts[s] for s in order[:-1]], test_size
    )  # always leave one speaker to train
    if chosen is not None:
        return _split_by_speakers(speakers, {order[i] for i in chosen}, name)
    test_speakers, held = set(), 0
    for speaker in order:
        if held + counts[speaker] > test_size:
            partial = speaker
            break
        test_speakers.add(speaker)
        held += counts[speaker]
    # the rest of the test set from `partial`, one utterance per class in turn
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, u in enumerate(utterances):
        if u.speaker == partial:
            by_class[u.label].append(i)
    picked, queues = [], [by_class[label] for label in sorted(by_class)]
    while len(picked) < test_size - held:
        for queue in queues:
            if queue and len(picked) < test_size - held:
                picked.append(queue.pop(0))
    test = sorted([i for i, s in enumerate(speakers) if s in test_speakers] + picked)
    train = tuple(i for i, s in enumerate(speakers) if s not in test_speakers and s != partial)
    return Fold(name, train, tuple(test))


def _check(fold: Fold, utterances: Sequence[Utterance]) -> None:
    """No speaker on both sides; a training side with files of at least two classes."""
    train_speakers = {utterances[i].speaker for i in fold.train}
    shared = train_speakers & {utterances[i].speaker for i in fold.test}
    if shared:  # a speaker id shared by two sessions would do this
        raise SedError(
            f"fold {fold.name}: speaker(s) {', '.join(sorted(shared))} on both the training "
            "and the test side"
        )
    if not fold.test:
        raise SedError(f"fold {fold.name}: the test side has no files")
    classes = {utterances[i].label for i in fold.train}
    if len(classes) < 2:
        seen = f"only class {next(iter(classes))!r}" if classes else "no files"
        raise SedError(
            f"fold {fold.name}: the training side has {seen}; "
            "expected files of at least two classes"
        )
