"""Any corpus, described by a CSV manifest (corpus name "csv").

Columns ``path,label,speaker`` and optionally ``session`` (a header row is required; other
columns are ignored). Paths are relative to the manifest's folder unless absolute. Classes are the
sorted set of labels, or the ``classes`` given to ``load_corpus`` (then in that order, and any
other label is an error). Default protocol: leave-one-session-out when every row has a session,
else leave-one-speaker-out. Both are known once the manifest is read: ``load_corpus`` returns
a loader made for the manifest (:meth:`CsvManifest.for_utterances`); reading never changes a
loader. A listed file that does not exist is kept here and left out, with a warning, by the
feature extractor; a manifest none of whose files exists is an error.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from sed_model.corpora.base import Corpus, Utterance, sorted_utterances
from sed_model.errors import CorpusError

REQUIRED_COLUMNS = ("path", "label", "speaker")
DEFAULT_MANIFEST_NAME = "manifest.csv"


class CsvManifest(Corpus):
    name = "csv"
    title = "CSV manifest"
    default_protocol = "loso"
    data_hint = (
        "a CSV manifest with a header path,label,speaker[,session] (paths relative to the manifest)"
    )

    def __init__(self, classes: Sequence[str] | None = None, default_protocol: str = "loso"):
        self.allowed_classes = tuple(classes) if classes is not None else None
        self.default_protocol = default_protocol

    @property
    def classes(self) -> tuple[str, ...]:
        """The labels of the manifest; known once it is read (use ``load_corpus``)."""
        if self.allowed_classes is None:
            raise CorpusError(
                "the classes of a CSV manifest are known only once it is read; "
                "use load_corpus('csv', path)"
            )
        return self.allowed_classes

    def for_utterances(self, utterances: Sequence[Utterance]) -> CsvManifest:
        """A loader for the manifest that gave ``utterances``: its classes (the ones given, or
        the sorted labels) and its default protocol (sessions everywhere: by session)."""
        classes = self.allowed_classes or tuple(sorted({u.label for u in utterances}))
        protocol = "loso-session" if all(u.session for u in utterances) else "loso"
        return CsvManifest(classes, protocol)

    def utterances(self, data_dir: Path | None) -> list[Utterance]:
        manifest = self._manifest_path(data_dir)
        utterances = []
        with open(manifest, newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file)
            header = [name.strip() for name in reader.fieldnames or []]
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise CorpusError(
                    f"manifest {manifest} lacks column(s) {', '.join(missing)} (header seen: "
                    f"{','.join(header) or 'none'}); expected a header path,label,speaker[,session]"
                )
            reader.fieldnames = header
            for row in reader:
                line = reader.line_num
                if not any((value or "").strip() for value in row.values()):
                    continue  # blank line
                fields = {c: (row.get(c) or "").strip() for c in (*REQUIRED_COLUMNS, "session")}
                for column in REQUIRED_COLUMNS:
                    if not fields[column]:
                        raise CorpusError(
                            f"manifest {manifest} line {line}: empty {column}; "
                            "every row needs path,label,speaker"
                        )
                if self.allowed_classes is not None and fields["label"] not in self.allowed_classes:
                    raise CorpusError(
                        f"manifest {manifest} line {line}: unknown label {fields['label']!r}; "
                        f"expected one of {', '.join(self.allowed_classes)}"
                    )
                path = Path(fields["path"]).expanduser()
                path = path if path.is_absolute() else manifest.parent / path
                utterances.append(
                    Utterance(path, fields["label"], fields["speaker"], fields["session"] or None)
                )
        if not utterances:
            raise CorpusError(f"manifest {manifest} has no rows; expected one row per audio file")
        if not any(u.path.is_file() for u in utterances):
            raise CorpusError(
                f"none of the {len(utterances)} audio files listed in {manifest} exists "
                f"(e.g. {utterances[0].path}); "
                "expected paths relative to the manifest's folder or absolute"
            )
        return sorted_utterances(utterances)

    def _manifest_path(self, data_dir: Path | None) -> Path:
        if data_dir is None:
            raise CorpusError(f"corpus 'csv' needs a manifest (--data): {self.data_hint}")
        path = Path(data_dir).expanduser()
        if path.is_dir() and (path / DEFAULT_MANIFEST_NAME).is_file():
            return path / DEFAULT_MANIFEST_NAME
        if not path.is_file():
            raise CorpusError(
                f"manifest {path} does not exist or is not a file; expected {self.data_hint} "
                f"(or a folder holding {DEFAULT_MANIFEST_NAME})"
            )
        return path


CORPUS = CsvManifest()
