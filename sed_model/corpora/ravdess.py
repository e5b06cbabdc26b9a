"""RAVDESS, the Ryerson Audio-Visual Database of Emotional Speech and Song (Livingstone &
Russo, 2018).

24 actors, file names ``MM-VV-EE-II-SS-RR-AA.wav``: modality MM (03 = audio-only), vocal
channel VV (01 speech, 02 song), emotion EE (01 neutral, 02 calm, 03 happy, 04 sad, 05 angry,
06 fearful, 07 disgust, 08 surprised), intensity II, statement SS, repetition RR, actor AA.
Only audio-only speech is used (03-01-*; song and the video files are left out): 1440 files of
the ``Audio_Speech_Actors_01-24`` release, 8 classes, speaker = actor AA. Files are searched
below the given folder (``Actor_XX/`` subfolders). Default protocol: leave-one-speaker-out.
"""

import re
from pathlib import Path

from sed_model.corpora.base import Corpus, Utterance, scan_named_files

EMOTION_CODES = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
AUDIO_ONLY, SPEECH = "03", "01"
FILE_NAME = re.compile(
    r"(?P<modality>\d\d)-(?P<channel>\d\d)-(?P<emotion>\d\d)-(?P<intensity>\d\d)"
    r"-(?P<statement>\d\d)-(?P<repetition>\d\d)-(?P<actor>\d\d)\.wav"
)


def _utterance(path: Path, m: re.Match[str]) -> Utterance | None:
    if m["modality"] != AUDIO_ONLY or m["channel"] != SPEECH or m["emotion"] not in EMOTION_CODES:
        return None
    return Utterance(path, EMOTION_CODES[m["emotion"]], m["actor"])


class Ravdess(Corpus):
    name = "ravdess"
    title = "RAVDESS"
    classes = tuple(EMOTION_CODES.values())
    default_protocol = "loso"
    data_hint = (
        "the RAVDESS speech folder that holds Actor_01 ... Actor_24 "
        "(files 03-01-EE-II-SS-RR-AA.wav)"
    )

    def utterances(self, data_dir: Path | None) -> list[Utterance]:
        return scan_named_files(
            self.require_dir(data_dir),
            ".wav",
            FILE_NAME,
            self,
            "speech files 03-01-EE-II-SS-RR-AA.wav",
            _utterance,
        )


CORPUS = Ravdess()
