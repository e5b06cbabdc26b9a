"""Confounds between speaker and label, checked before per-speaker normalisation.

``--normalize speaker`` z-scores every speaker's features with that speaker's own mean and
standard deviation. When a speaker carries a single label, that speaker's mean *is* the
label's mean for that speaker: subtracting it removes the emotion together with the speaker,
and what is left cannot tell that speaker's label from another speaker's. Acted corpora (every
speaker acts every emotion) are safe; corpora of spontaneous or crowd-sourced speech, where
many speakers contribute one emotion, are not (on one such corpus the SVM fell below chance
with per-speaker statistics).

The rule: the warning fires when **a majority of the speakers** (more than half of them)
carry a single label. A speaker with one utterance counts as single-label. Fewer single-label
speakers leave most of the corpus' speakers with a within-speaker contrast, which is what
per-speaker statistics keep; the count is recorded either way so a reader can judge.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from .corpora.base import Utterance
from .errors import DataWarning


@dataclass(frozen=True)
class LabelSpread:
    """How labels spread over speakers: how many speakers, how many of them with one label,
    and the normalisation it was checked for."""

    speakers: int
    single_label_speakers: int
    normalize: str

    @property
    def mostly_single(self) -> bool:
        """More than half of the speakers carry a single label (see the module docstring)."""
        return 2 * self.single_label_speakers > self.speakers

    @property
    def warned(self) -> bool:
        """Whether per-speaker normalisation meets a mostly single-label corpus."""
        return self.normalize == "speaker" and self.mostly_single

    def message(self) -> str:
        return (f"{self.single_label_speakers} of {self.speakers} speakers have a single label; "
                "--normalize speaker z-scores every speaker with its own statistics, which "
                "removes the emotion together with the speaker (consider --normalize global)")

    def to_dict(self) -> dict:
        return {"speakers": self.speakers, "single_label_speakers": self.single_label_speakers,
                "warned": self.warned}


def label_spread(utterances: Sequence[Utterance], normalize: str) -> LabelSpread:
    """The :class:`LabelSpread` of ``utterances`` (speaker and label of each)."""
    labels: dict[str, set[str]] = defaultdict(set)
    for u in utterances:
        labels[u.speaker].add(u.label)
    single = sum(len(names) == 1 for names in labels.values())
    return LabelSpread(len(labels), single, normalize)


def check_label_spread(utterances: Sequence[Utterance], normalize: str, *,
                       show: bool = True) -> LabelSpread:
    """:func:`label_spread`, with one ``warning:`` line (a :class:`DataWarning`) when
    ``normalize`` is ``speaker`` and most speakers carry a single label (and ``show``: false
    on all but one process of a distributed run). The warning is shown once per process for
    the same counts, however many runs check the same corpus."""
    spread = label_spread(utterances, normalize)
    if spread.warned and show:
        warnings.warn(spread.message(), DataWarning, stacklevel=1)
    return spread
