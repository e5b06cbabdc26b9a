"""IEMOCAP, the Interactive Emotional Dyadic Motion Capture database (Busso et al., 2008).

Five sessions, each a dyad of one female and one male actor. Labels are the consensus
categories of ``Session*/dialog/EmoEvaluation/*.txt``, lines like
``[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]``; audio is
``Session*/sentences/wav/<dialog>/<utterance>.wav``. Speaker = session + gender of the
utterance's speaker, the first letter of the name's last field (Ses01F_impro01_F000 -> Ses01F,
Ses01F_impro01_M003 -> Ses01M); session = Ses01..Ses05. Default protocol: leave-one-session-out
(5 folds, so no actor and no dialogue partner is seen in training).

The paper's five classes ang/exc/fru/neu/sad (corpus "iemocap"; 6785 utterances with the
released labels — the paper reports 6355 without saying which it left out), and the common
four-class set neu/hap/sad/ang with exc merged into hap (corpus "iemocap4", 5531 utterances).
Utterances with any other label (hap in the five-class set, sur, fea, dis, oth, xxx) are left out.
"""

import re
from pathlib import Path

from sed_model.corpora.base import Corpus, Utterance, sorted_utterances
from sed_model.errors import CorpusError

LABEL_LINE = re.compile(
    r"\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\s+(?P<utterance>Ses(?P<session>\d\d)[FM]_\S+_(?P<gender>[FM])\d+)\s+(?P<label>\w+)\s+\["
)


def read_labels(root: Path) -> list[tuple[str, str, str]]:
    """(session folder name, utterance name, label code) for every line of the EmoEvaluation
    files."""
    labels = []
    for label_file in sorted(root.glob("Session*/dialog/EmoEvaluation/*.txt")):
        if label_file.name.startswith("._"):  # macOS resource forks
            continue
        session_folder = label_file.parents[2].name
        for line in label_file.read_text(encoding="utf-8", errors="replace").splitlines():
            if match := LABEL_LINE.match(line.strip()):
                labels.append((session_folder, match["utterance"], match["label"]))
    return labels


class Iemocap(Corpus):
    name = "iemocap"
    title = "IEMOCAP"
    classes = ("ang", "exc", "fru", "neu", "sad")
    default_protocol = "loso-session"
    data_hint = "the IEMOCAP release folder that holds Session1 ... Session5 (IEMOCAP_full_release)"
    label_map = {code: code for code in classes}  # corpus label code -> class

    def utterances(self, data_dir: Path | None) -> list[Utterance]:
        root = self.require_dir(data_dir)
        labels = read_labels(root)
        if not labels:
            raise CorpusError(
                f"no IEMOCAP label files (Session*/dialog/EmoEvaluation/*.txt with lines "
                f"'[start - end] Ses01F_impro01_F000 neu [v, a, d]') found in {root}; "
                f"expected {self.data_hint}"
            )
        utterances = []
        for session_folder, name, code in labels:
            if code not in self.label_map:
                continue
            dialog = name.rsplit("_", 1)[0]  # Ses01F_impro01_F000 -> Ses01F_impro01
            gender = name.rsplit("_", 1)[1][0]  # F000 -> F
            session = name[:5]  # Ses01
            path = root / session_folder / "sentences" / "wav" / dialog / f"{name}.wav"
            utterances.append(Utterance(path, self.label_map[code], session + gender, session))
        if not any(u.path.is_file() for u in utterances):
            raise CorpusError(
                "no IEMOCAP wav files (Session*/sentences/wav/<dialog>/<utterance>.wav) "
                f"found in {root} "
                f"for its {len(utterances)} labelled utterances; expected {self.data_hint}"
            )
        return sorted_utterances(utterances)


CORPUS = Iemocap()
