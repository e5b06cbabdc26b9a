"""Builders of tiny corpus trees in a temporary folder, one per corpus layout.

Every audio file is a short tone (0.1 s unless asked otherwise) so that the loaders can be
tested on the real folder layouts and the feature extractor can read the files quickly.
"""

from pathlib import Path

import numpy as np
import soundfile

SAMPLE_RATE = 16_000
EMODB_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "emodb"


def tone(
    seconds: float = 0.1,
    sample_rate: int = SAMPLE_RATE,
    channels: int = 1,
    frequency: float = 220.0,
) -> np.ndarray:
    """(n,) or (n, channels) float32: a harmonic tone with a little noise (each channel
    different)."""
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    rng = np.random.default_rng(int(frequency * 1000) + channels)
    columns = [
        0.3 * np.sin(2 * np.pi * frequency * (c + 1) * t)
        + 0.1 * np.sin(2 * np.pi * 3 * frequency * t)
        + 0.01 * rng.standard_normal(n)
        for c in range(channels)
    ]
    signal = np.stack(columns, axis=1).astype(np.float32)
    return signal[:, 0] if channels == 1 else signal


def write_wav(
    path: Path,
    seconds: float = 0.1,
    sample_rate: int = SAMPLE_RATE,
    channels: int = 1,
    frequency: float = 220.0,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(
        path, tone(seconds, sample_rate, channels, frequency), sample_rate, subtype="PCM_16"
    )
    return path


def write_avi(path: Path, signal: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """An .avi container with one pcm_s16le audio stream; signal (n,) or (n, channels)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    signal = signal.reshape(len(signal), -1)  # (n, channels)
    channels = signal.shape[1]
    pcm = (np.clip(signal, -1.0, 1.0) * 32767).astype(np.int16)
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream(
            "pcm_s16le", rate=sample_rate, layout="mono" if channels == 1 else "stereo"
        )
        frame = av.AudioFrame.from_ndarray(
            pcm.reshape(1, -1), format="s16", layout=stream.layout.name
        )  # interleaved
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def make_emodb_tree(root: Path) -> Path:
    """3 speakers x 7 emotions; plus a README and a wav whose name is not an EmoDB name."""
    for speaker in ("03", "08", "10"):
        for index, code in enumerate("WLEAFTN"):
            write_wav(root / f"{speaker}a0{index}{code}a.wav", frequency=150 + 20 * index)
    (root / "README.md").write_text("not audio\n")
    write_wav(root / "notes_recording.wav")
    return root


def make_ravdess_tree(root: Path) -> Path:
    """2 actors x 8 emotions of audio-only speech; plus song (03-02) and video-only (02-01)
    files to skip."""
    for actor in ("01", "02"):
        folder = root / f"Actor_{actor}"
        for emotion in range(1, 9):
            write_wav(
                folder / f"03-01-{emotion:02d}-01-01-01-{actor}.wav", frequency=150 + 10 * emotion
            )
        write_wav(folder / f"03-02-03-01-01-01-{actor}.wav")  # song
        write_wav(folder / f"02-01-03-01-01-01-{actor}.wav")  # video-only modality code
    return root


def make_cremad_tree(root: Path) -> Path:
    """AudioWAV/ with 3 actors x 6 emotions."""
    for actor in ("1001", "1002", "1091"):
        for index, emotion in enumerate(("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")):
            level = "XX" if index % 2 else "HI"
            write_wav(
                root / "AudioWAV" / f"{actor}_DFA_{emotion}_{level}.wav", frequency=150 + 10 * index
            )
    return root


IEMOCAP_LABELS = {  # session -> (dialog, [(utterance, label)])
    1: (
        "Ses01F_impro01",
        [
            ("F000", "neu"),
            ("M000", "ang"),
            ("F001", "exc"),
            ("M001", "fru"),
            ("F002", "sad"),
            ("M002", "hap"),
            ("F003", "xxx"),
        ],
    ),
    2: (
        "Ses02M_script01_1",
        [
            ("F000", "ang"),
            ("M000", "neu"),
            ("F001", "sad"),
            ("M001", "exc"),
            ("F002", "fru"),
            ("M002", "sur"),
        ],
    ),
}


def make_iemocap_tree(root: Path) -> Path:
    """Two sessions with EmoEvaluation label files (header, one label line per utterance, and the
    annotator lines that follow) and the sentence wav files."""
    for session, (dialog, entries) in IEMOCAP_LABELS.items():
        session_dir = root / f"Session{session}"
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        for index, (suffix, label) in enumerate(entries):
            name = f"{dialog}_{suffix}"
            lines += [
                f"[{index + 1.0:.4f} - {index + 1.9:.4f}]\t{name}\t{label}"
                "\t[2.5000, 2.5000, 2.5000]",
                "C-E1:\tNeutral state;\t()",
                "A-E1:\tval 3; act 2; dom  2;\t()",
                "",
            ]
            write_wav(
                session_dir / "sentences" / "wav" / dialog / f"{name}.wav",
                frequency=150 + 10 * index,
            )
        evaluation = session_dir / "dialog" / "EmoEvaluation"
        evaluation.mkdir(parents=True, exist_ok=True)
        (evaluation / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
        (evaluation / "Categorical").mkdir(exist_ok=True)
        (evaluation / "Categorical" / f"{dialog}_e1_cat.txt").write_text(
            f"{dialog}_F000 :Neutral state; ()\n"
        )
    return root


ENTERFACE_EMOTIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")


def make_enterface_tree(root: Path) -> Path:
    """Subjects 1 and 2 with the sentence level, subject 6 without it, 6 emotions each, one
    .avi per emotion (subject 1 with two sentences for anger). ``subject 1/fear/sentence 1``
    holds a file NAMED as anger (s1_an_9.avi): its label must be fear (the folder).
    Returns root."""
    short = {
        "anger": "an",
        "disgust": "di",
        "fear": "fe",
        "happiness": "ha",
        "sadness": "sa",
        "surprise": "su",
    }
    for subject in (1, 2, 6):
        for index, emotion in enumerate(ENTERFACE_EMOTIONS):
            sentence = "" if subject == 6 else "sentence 1"
            folder = root / f"subject {subject}" / emotion / sentence
            write_avi(
                folder / f"s{subject}_{short[emotion]}_1.avi", tone(0.1, frequency=150 + 10 * index)
            )
    write_avi(root / "subject 1" / "anger" / "sentence 2" / "s1_an_2.avi", tone(0.1))
    write_avi(
        root / "subject 1" / "fear" / "sentence 1" / "s1_an_9.avi", tone(0.1)
    )  # misnamed: it is fear
    (root / "subject 2" / "anger" / "Thumbs.db").write_bytes(b"\0" * 16)
    return root


def make_csv_tree(
    root: Path, rows: list[str] | None = None, header: str = "path,label,speaker,session"
) -> Path:
    """A manifest.csv beside audio/: 2 speakers x 2 labels (relative paths). Returns the
    manifest."""
    default_rows = []
    for speaker in ("alice", "bob"):
        for label in ("calm", "tense"):
            relative = f"audio/{speaker}_{label}.wav"
            write_wav(root / relative)
            default_rows.append(f"{relative},{label},{speaker},s{1 if speaker == 'alice' else 2}")
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join([header, *(default_rows if rows is None else rows)]) + "\n")
    return manifest
