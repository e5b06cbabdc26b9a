"""EmoDB, the Berlin Database of Emotional Speech (Burkhardt et al., 2005).

10 actors (speakers 03, 08-16), 7 emotions, German sentences. The label comes from the file
name ``SSTTTEV.wav`` only: SS speaker, TTT text id, E emotion code, V version letter.
E: W anger (Ärger), L boredom (Langeweile), E disgust (Ekel), A fear (Angst), F happiness
(Freude), T sadness (Trauer), N neutral. Files are searched below the given folder, so both the
folder holding the wav files and its parent (the release's ``wav/``) work. Default protocol:
leave-one-speaker-out (10 folds).
"""

import re
from pathlib import Path

from sed_model.corpora.base import Corpus, Utterance, scan_named_files

EMOTION_CODES = {
    "W": "anger",
    "L": "boredom",
    "E": "disgust",
    "A": "fear",
    "F": "happiness",
    "T": "sadness",
    "N": "neutral",
}
FILE_NAME = re.compile(
    r"(?P<speaker>\d\d)(?P<text>[a-z]\d\d)(?P<emotion>[WLEAFTN])(?P<version>[a-z])\.wav"
)


class EmoDB(Corpus):
    name = "emodb"
    title = "EmoDB"
    classes = tuple(EMOTION_CODES.values())
    default_protocol = "loso"
    data_hint = "the EmoDB folder that holds the wav files (SSTTTEV.wav, e.g. 03a01Fa.wav)"

    def utterances(self, data_dir: Path | None) -> list[Utterance]:
        return scan_named_files(
            self.require_dir(data_dir),
            ".wav",
            FILE_NAME,
            self,
            "SSTTTEV.wav",
            lambda path, m: Utterance(path, EMOTION_CODES[m["emotion"]], m["speaker"]),
        )


CORPUS = EmoDB()
