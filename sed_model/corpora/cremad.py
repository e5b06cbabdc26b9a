"""CREMA-D, the Crowd-sourced Emotional Multimodal Actors Dataset (Cao et al., 2014).

91 actors (1001-1091), file names ``AudioWAV/AAAA_SSS_EEE_LL.wav``: actor AAAA, sentence SSS,
emotion EEE (ANG anger, DIS disgust, FEA fear, HAP happy, NEU neutral, SAD sad), level LL
(LO/MD/HI/XX). Labels are the intended (acted) emotions of the file names, not the crowd
ratings. Speaker = actor. Files are searched below the given folder. Default protocol: five
speaker-grouped folds ("kfold"; leave-one-speaker-out would train 91 models).
"""

import re
from pathlib import Path

from sed_model.corpora.base import Corpus, Utterance, scan_named_files

EMOTION_CODES = {
    "ANG": "anger",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
FILE_NAME = re.compile(
    r"(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>ANG|DIS|FEA|HAP|NEU|SAD)_(?P<level>[A-Z]{1,2})\.wav"
)


class CremaD(Corpus):
    name = "cremad"
    title = "CREMA-D"
    classes = tuple(EMOTION_CODES.values())
    default_protocol = "kfold"
    data_hint = "the CREMA-D AudioWAV folder (files 1001_DFA_ANG_XX.wav) or its parent"

    def utterances(self, data_dir: Path | None) -> list[Utterance]:
        return scan_named_files(
            self.require_dir(data_dir),
            ".wav",
            FILE_NAME,
            self,
            "AAAA_SSS_EEE_LL.wav",
            lambda path, m: Utterance(path, EMOTION_CODES[m["emotion"]], m["actor"]),
        )


CORPUS = CremaD()
