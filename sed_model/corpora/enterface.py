"""eNTERFACE'05 audio-visual emotion database (Martin, Kotsia, Macq & Pitas, 2006).

Subjects read sentences in six emotions; only the audio track of the .avi files is used (decoded
with PyAV). Layout ``subject N/<emotion>/sentence K/*.avi``; subject 6 has no ``sentence K``
level, so every .avi anywhere below an emotion folder counts. The label comes from the emotion
folder and the speaker from the subject folder, never from the file name, which is wrong in
places in the released corpus. Emotion folders: anger, disgust, fear, happiness, sadness,
surprise (case-insensitive; "happy", "sad", "angry" accepted too). Other folders are ignored.

Default protocol: the paper's hold-out of 260 test utterances ("enterface-paper", see
``sed_model.splits``), from a speaker-disjoint set of subjects.
"""

import re
from pathlib import Path

from sed_model.corpora.base import Corpus, Utterance, sorted_utterances
from sed_model.errors import CorpusError

EMOTION_FOLDERS = {
    "anger": "anger",
    "angry": "anger",
    "disgust": "disgust",
    "fear": "fear",
    "happiness": "happiness",
    "happy": "happiness",
    "sadness": "sadness",
    "sad": "sadness",
    "surprise": "surprise",
}
SUBJECT_FOLDER = re.compile(r"subject\s*_?(?P<number>\d+)", re.IGNORECASE)


class Enterface(Corpus):
    name = "enterface"
    title = "eNTERFACE'05"
    classes = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
    default_protocol = "enterface-paper"
    data_hint = (
        "the eNTERFACE'05 folder that holds 'subject 1' ... 'subject 44' "
        "(subject N/<emotion>/sentence K/*.avi)"
    )

    def utterances(self, data_dir: Path | None) -> list[Utterance]:
        root = self.require_dir(data_dir)
        utterances = []
        for subject_dir in sorted(root.iterdir()):
            subject = SUBJECT_FOLDER.fullmatch(subject_dir.name.strip())
            if subject is None or not subject_dir.is_dir():
                continue
            speaker = f"{int(subject['number']):02d}"  # "subject 6" -> "06", sorts numerically
            for emotion_dir in sorted(subject_dir.iterdir()):
                label = EMOTION_FOLDERS.get(emotion_dir.name.strip().lower())
                if label is None or not emotion_dir.is_dir():
                    continue
                for path in sorted(emotion_dir.rglob("*")):
                    if (
                        path.suffix.lower() == ".avi"
                        and path.is_file()
                        and not path.name.startswith("._")
                    ):
                        utterances.append(Utterance(path, label, speaker))
        if not utterances:
            raise CorpusError(
                f"no eNTERFACE'05 files (subject N/<emotion>/.../*.avi) found in {root}; "
                f"expected {self.data_hint}"
            )
        return sorted_utterances(utterances)


CORPUS = Enterface()
