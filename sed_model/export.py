"""Export a trained model to ONNX, for inference without PyTorch (onnxruntime, other runtimes).

    python -m sed_model.export --checkpoint emodb --onnx emodb.onnx
    python -m sed_model.predict --checkpoint emodb.onnx clip.wav

The graph. Inputs ``features`` (B, T, 130) float32, the frames *already normalised*, padded
along T, and ``lengths`` (B,) int64, the valid steps of each row; B and T are dynamic. Output
``probabilities`` (B, classes) float32, the softmax of the model's logits. The attention ops
are exported from the reference formulas (:mod:`sed_kernels.reference`, the specification
every fast backend is tested against): plain ONNX operators. The LSTM layers run over the
padded batch, as on CPU: they are unidirectional, so a valid step never reads the padded
steps after it, and ``last_i`` and the attention read only valid steps (``lengths``).

The metadata (``metadata_props`` of the file, each value a JSON text; :data:`METADATA_KEYS`)
holds what a runtime needs around the graph: the class names in output order, the
normalisation statistics (mode, mean, std; a ``speaker`` model normalises each recording
with its own statistics, as :meth:`sed_model.features.Normalizer.new_speaker` does), the
variant and hyperparameters, the openSMILE feature configuration the frames come from, and
``edge_quiet`` (``trim``: a runtime gives the model only the frames around the input's
speech, :func:`sed_model.vad.speech_span`).
``sed_model.load_model("model.onnx")`` and ``predict --checkpoint model.onnx`` read it.

Every export is checked: the file is run with onnxruntime on a batch of several lengths and
compared with the PyTorch model (:data:`CHECK_TOLERANCE`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import SedError

ONNX_FORMAT = "sed_model-onnx-1"
OPSET = 17
CHECK_TOLERANCE = 1e-4  # largest |probability difference| accepted by the export check
CHECK_LENGTHS = (120, 1, 37, 200)  # the rows of the check batch (a 1-step row included)
METADATA_KEYS = ("format", "class_names", "normalizer", "variant", "hyperparameters",
                 "feature_config", "edge_quiet", "source")
DESCRIPTION = ("Export a trained model to ONNX (inputs features (B, T, 130) float32 and lengths "
               "(B,) int64, output class probabilities; class names and normalisation in the "
               "file's metadata). Run it with python -m sed_model.predict --checkpoint OUT.onnx.")
INSTALL_HINT = "pip install 'sed-dense-lstm[onnx]' (onnx and onnxruntime)"


class ProbabilityModel(torch.nn.Module):
    """A model's class probabilities: ``softmax(model(features, lengths))``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(features, lengths), dim=1)


def require(module: str):
    """Import ``onnx`` or ``onnxruntime``; a :class:`SedError` naming the extra when missing."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise SedError(f"ONNX needs the package {module!r}: {INSTALL_HINT}") from None


def metadata(checkpoint: dict, source: str) -> dict[str, str]:
    """The ``metadata_props`` of an exported checkpoint (JSON texts, see the module doc)."""
    from .checkpoint import edge_quiet_from_checkpoint
    from .features import FEATURE_DIM, FeatureConfig

    normalizer = checkpoint["normalizer"]
    values = {
        "format": ONNX_FORMAT,
        "class_names": list(checkpoint["class_names"]),
        "normalizer": {"mode": normalizer["mode"], "mean": normalizer["mean"],
                       "std": normalizer["std"]},
        "variant": checkpoint["hyperparameters"]["variant"],
        "hyperparameters": dict(checkpoint["hyperparameters"], backend="reference"),
        "feature_config": {**dataclasses.asdict(FeatureConfig()), "feature_dim": FEATURE_DIM},
        "edge_quiet": edge_quiet_from_checkpoint(checkpoint),
        "source": source,
    }
    return {key: json.dumps(values[key]) for key in METADATA_KEYS}


def export_onnx(name_or_path: str | Path, out: str | Path) -> float:
    """Write the ONNX file of a bundled model, a run folder's model.pt or a checkpoint file;
    returns the largest probability difference of the export check."""
    from .api import resolve_checkpoints
    from .checkpoint import load_checkpoint, model_from_checkpoint

    onnx = require("onnx")
    require("onnxruntime")
    paths, description = resolve_checkpoints(name_or_path)
    checkpoint = load_checkpoint(paths[0])
    model = ProbabilityModel(model_from_checkpoint(checkpoint, backend="reference")).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _trace(model, out)
    graph = onnx.load(str(out))
    for key, value in metadata(checkpoint, description).items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(out))
    difference = check_export(model, out)
    if difference > CHECK_TOLERANCE:
        raise SedError(f"{out}: onnxruntime differs from PyTorch by {difference:.2e} "
                       f"(expected <= {CHECK_TOLERANCE:g})")
    return difference


def _trace(model: ProbabilityModel, out: Path) -> None:
    """TorchScript-based export of ``model`` with dynamic batch and steps."""
    x, lengths = _check_batch(model.model.input_dim)
    with warnings.catch_warnings():  # tracer notes on the shape checks of the reference ops
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (x, lengths), str(out), input_names=["features", "lengths"],
            output_names=["probabilities"], opset_version=OPSET, dynamo=False,
            dynamic_axes={"features": {0: "batch", 1: "steps"}, "lengths": {0: "batch"},
                          "probabilities": {0: "batch"}})


def _check_batch(width: int, lengths=CHECK_LENGTHS, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), width, generator=generator)
    return x, torch.tensor(lengths, dtype=torch.int64)


def check_export(model: ProbabilityModel, path: Path) -> float:
    """Largest |difference| between onnxruntime on ``path`` and ``model`` on a batch of rows
    of several lengths (other lengths and batch size than the traced ones)."""
    from .onnx_model import OnnxNet

    x, lengths = _check_batch(model.model.input_dim, lengths=(7, 300, 1, 64, 150), seed=1)
    with torch.no_grad():
        expected = model(x, lengths).numpy()
    got = OnnxNet(path).probabilities(x.numpy(), lengths.numpy())
    return float(np.abs(got - expected).max())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sed_model.export", description=DESCRIPTION)
    parser.add_argument("--checkpoint", required=True, metavar="NAME|RUN_DIR|FILE.pt",
                        help="a bundled model name, a run folder (its model.pt) or a "
                             "checkpoint file")
    parser.add_argument("--onnx", required=True, type=Path, metavar="OUT.onnx",
                        help="the ONNX file to write")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; user errors print ``error: ...`` and exit with status 2."""
    from .cli import run_main

    run_main(_export_command, argv)


def _export_command(argv: list[str] | None) -> None:
    args = build_parser().parse_args(argv)
    difference = export_onnx(args.checkpoint, args.onnx)
    print(f"wrote {args.onnx} (onnxruntime matches PyTorch within {difference:.1e})")


if __name__ == "__main__":
    main()
