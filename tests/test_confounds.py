"""The label-spread check before per-speaker normalisation (sed_model.confounds)."""

from pathlib import Path

import pytest

from sed_model.confounds import check_label_spread, label_spread
from sed_model.corpora.base import Utterance
from sed_model.errors import DataWarning


def corpus(labels_of: dict[str, str]) -> list[Utterance]:
    """One utterance per label letter: {"s1": "aab"} gives s1 two a's and a b."""
    return [Utterance(Path(f"/c/{s}_{i}.wav"), label, s)
            for s, labels in labels_of.items() for i, label in enumerate(labels)]


def test_counts_speakers_with_a_single_label():
    spread = label_spread(corpus({"s1": "ab", "s2": "aa", "s3": "b", "s4": "abc"}), "speaker")
    assert (spread.speakers, spread.single_label_speakers) == (4, 2)
    assert spread.to_dict() == {"speakers": 4, "single_label_speakers": 2, "warned": False}


@pytest.mark.parametrize("labels_of, fires", [
    ({"s1": "aa", "s2": "bb", "s3": "ab"}, True),  # 2 of 3: a majority
    ({"s1": "aa", "s2": "bb", "s3": "ab", "s4": "ba"}, False),  # 2 of 4: half is not most
    ({"s1": "a", "s2": "b", "s3": "c", "s4": "ab", "s5": "b"}, True),  # 4 of 5
    ({"s1": "ab", "s2": "ba"}, False),
])
def test_the_warning_fires_when_a_majority_of_speakers_has_one_label(labels_of, fires, recwarn):
    spread = check_label_spread(corpus(labels_of), "speaker")
    assert spread.warned is fires
    shown = [str(w.message) for w in recwarn.list if issubclass(w.category, DataWarning)]
    assert len(shown) == int(fires)
    if fires:
        single, total = spread.single_label_speakers, spread.speakers
        assert shown[0].startswith(f"{single} of {total} speakers have a single label")
        assert "removes the emotion together with the speaker" in shown[0]
        assert "\n" not in shown[0]


def test_global_normalisation_records_the_spread_without_a_warning(recwarn):
    spread = check_label_spread(corpus({"s1": "aa", "s2": "bb", "s3": "cc"}), "global")
    assert spread.mostly_single and not spread.warned
    assert not [w for w in recwarn.list if issubclass(w.category, DataWarning)]
