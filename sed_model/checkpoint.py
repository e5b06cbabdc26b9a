"""Crash-safe checkpoints and JSON files.

A checkpoint is a dict saved with ``torch.save`` and loaded with ``weights_only=True`` (no
arbitrary pickles): tensors, numbers, strings, lists and dicts only. It holds:

``format``         ``CHECKPOINT_FORMAT``
``model``          the model's ``state_dict``
``hyperparameters``  :meth:`DenseLSTMAttention.hyperparameters` (variant, cells, ...)
``class_names``    the class order of the logits
``normalizer``     the training split's normalisation statistics
``config``         the run's training configuration
``fold``           ``{"index": i, "name": ..., "count": n, "test_speakers": [...],
                   "validation_speakers": [...]}`` (no validation speakers: ``[]``)
``optimizer``      the optimizer's ``state_dict`` (Adam with a constant rate: no scheduler)
``scaler``         the fp16 gradient scaler's ``state_dict`` (empty for fp32 and bf16)
``rng``            torch RNG states (CPU, and CUDA when present); the batch order needs no
                   saved state: it is a function of the seed, the fold and the epoch
``step``, ``history``, ``best``, ``selected``
                   the fold's :class:`sed_model.fold.FoldState`: optimizer steps done, the
                   evaluations so far, the best test evaluation and the evaluation with the
                   best validation UAR (``None`` without validation speakers)

Every file is written to a temporary file in the same folder, flushed to disk and moved
over the target with ``os.replace``, so a killed run leaves either the old or the new file,
never half of one. A file damaged otherwise (a full disk, an interrupted copy) fails to
load with a :class:`SedError` naming it; ``--resume`` then says to delete it (the fold
restarts from step 0) or to restore a good copy. In a distributed run only rank 0 writes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .errors import SedError
from .features import Normalizer
from .model import DenseLSTMAttention
from .recipes import edge_quiets

CHECKPOINT_FORMAT = "sed_model-checkpoint-1"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write) -> None:
    """Call ``write(file_object)`` on a temporary file, then move it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2) + "\n"
    _atomic_write(path, lambda f: f.write(text.encode()))


def read_json(path: Path):
    """Read a JSON file written by :func:`write_json`; :class:`SedError` if unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SedError(f"cannot read {path}: {exc}") from None


def copy_atomic(source: Path, target: Path) -> None:
    """Copy ``source`` onto ``target`` atomically (a reader sees the old or the new file)."""
    with open(source, "rb") as f:
        _atomic_write(target, lambda out: shutil.copyfileobj(f, out))


def save_checkpoint(path: Path, payload: dict) -> None:
    """Save a checkpoint dict (see the module docstring) atomically."""
    payload = {"format": CHECKPOINT_FORMAT, **payload}
    _atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint onto the CPU; :class:`SedError` naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise SedError(f"checkpoint {path} does not exist (expected a .pt file written by train)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise SedError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise SedError(f"{path} is not a sed_model checkpoint (no format {CHECKPOINT_FORMAT!r})")
    return payload


def model_from_checkpoint(
    checkpoint: dict, *, backend: str | None = None, device: str = "cpu"
) -> DenseLSTMAttention:
    """Rebuild the model of a checkpoint in eval mode; ``backend`` overrides the saved one."""
    hyper = dict(checkpoint["hyperparameters"])
    if backend is not None:
        hyper["backend"] = backend
    model = DenseLSTMAttention(n_classes=len(checkpoint["class_names"]), **hyper)
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval()


def edge_quiet_from_checkpoint(checkpoint: dict) -> str:
    """``keep`` or ``trim``: what the checkpoint's model was trained to read of each
    utterance (``trim``: the frames around its speech, :func:`sed_model.vad.speech_span`); a
    checkpoint written before the option kept every frame."""
    config = checkpoint.get("config", {})
    text = config.get("recipe", config).get("edge_quiet", "keep")
    return edge_quiets(text)[checkpoint["hyperparameters"]["variant"]]


def normalizer_from_checkpoint(checkpoint: dict) -> Normalizer:
    """The training split's normalisation statistics stored in a checkpoint."""
    return Normalizer.from_state_dict(checkpoint["normalizer"])
