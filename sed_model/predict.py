"""Classify audio files with a trained checkpoint.

    python -m sed_model.predict --checkpoint runs/demo-feature-.../best.pt a.wav b.wav
    python -m sed_model.predict --checkpoint best.pt a.wav --json
    python -m sed_model.predict --checkpoint best.pt a.wav --plot-attention attention.png

Each file is decoded, turned into ComParE_2016 frames, normalised with the checkpoint's
training statistics and classified. ``--plot-attention`` draws, for every file, the
attention over its waveform: the time-attention weight of every 10 ms frame (``time``
variant), or, for the ``feature`` variant, each step's attention *focus*
(1 - normalised entropy of the softmax over features; the weights of a step always sum to
1, so their mass over time is flat) and a heatmap of the top layer's feature weights. The
``lstm`` and ``general`` variants have no attention to draw.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from .checkpoint import load_checkpoint, model_from_checkpoint, normalizer_from_checkpoint
from .cli import run_main
from .errors import SedError
from .features import extract_frames, load_audio
from .model import VARIANTS_WITH_ATTENTION
from .plots import plot_attention
from .runtime import check_backend, resolve_device


def predict_files(
    checkpoint_path: str | Path,
    files: list[str | Path],
    *,
    device: str = "auto",
    backend: str | None = None,
    with_attention: bool = False,
) -> list[dict]:
    """Label and class probabilities of every file.

    Returns one dict per file: ``file``, ``label``, ``probabilities`` ({class: p}); with
    ``with_attention`` also ``signal``, ``sample_rate``, ``variant`` and ``weights`` (one
    numpy array per LSTM layer, see :meth:`DenseLSTMAttention.forward_with_attention`).
    """
    checkpoint = load_checkpoint(checkpoint_path)
    class_names = list(checkpoint["class_names"])
    target_device = resolve_device(device)
    if backend is not None:
        check_backend(backend, target_device)
    model = model_from_checkpoint(checkpoint, backend=backend, device=str(target_device))
    if with_attention and model.variant not in VARIANTS_WITH_ATTENTION:
        raise SedError(f"the checkpoint's variant {model.variant!r} has no attention to plot "
                       f"(only {' and '.join(VARIANTS_WITH_ATTENTION)} have)")
    normalizer = normalizer_from_checkpoint(checkpoint)
    results = []
    for file in files:
        signal, sample_rate = load_audio(file)  # AudioError names the file
        try:
            frames = extract_frames(signal, sample_rate)  # (T, 130)
        except SedError as exc:
            raise SedError(f"{file}: {exc}") from None
        # a file of an unknown speaker: see Normalizer.new_speaker (own statistics in speaker mode)
        x = torch.from_numpy(normalizer.new_speaker([frames])[0])[None].to(target_device)
        lengths = torch.tensor([len(frames)], device=target_device)
        with torch.no_grad():
            if with_attention:
                logits, weights = model.forward_with_attention(x, lengths)
            else:
                logits, weights = model(x, lengths), []
        probabilities = torch.softmax(logits, dim=1)[0].cpu().numpy()
        result = {
            "file": str(file),
            "label": class_names[int(probabilities.argmax())],
            "probabilities": {c: float(p) for c, p in zip(class_names, probabilities)},
        }
        if with_attention:
            result.update(signal=signal, sample_rate=sample_rate, variant=model.variant,
                          weights=[w[0].cpu().numpy() for w in weights])
        results.append(result)
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sed_model.predict",
        description="Classify audio files (wav, flac, ogg, or the audio track of avi/mp4) "
                    "with a checkpoint written by sed_model.train.",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE",
                        help="audio files to classify")
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="a best.pt or last.pt written by sed_model.train")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of {file, label, probabilities}")
    parser.add_argument("--plot-attention", type=Path, default=None, metavar="OUT.png",
                        help="draw the attention over each file's waveform into this PNG (time "
                             "variant: weight per 10 ms frame; feature variant: per-step focus "
                             "= 1 - normalised entropy over features, plus a heatmap of the top "
                             "layer's feature weights); lstm/general have no attention")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to run the model (default auto: cuda if available)")
    parser.add_argument("--backend", default=None,
                        help="attention kernel backend (default: the one saved in the checkpoint)")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; user errors print ``error: ...`` and exit with status 2."""
    run_main(_predict_command, argv)


def _predict_command(argv: list[str] | None) -> None:
    args = build_parser().parse_args(argv)
    results = predict_files(args.checkpoint, args.files, device=args.device, backend=args.backend,
                            with_attention=args.plot_attention is not None)
    if args.json:
        print(json.dumps([{k: r[k] for k in ("file", "label", "probabilities")} for r in results],
                         indent=2))
    else:
        for r in results:
            ranked = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])
            probabilities = ", ".join(f"{c} {p:.2f}" for c, p in ranked)
            print(f"{r['file']}: {r['label']}  ({probabilities})")
    if args.plot_attention is not None:
        plot_attention([{"name": Path(r["file"]).name, **r} for r in results], args.plot_attention)
        if not args.json:
            print(f"wrote {args.plot_attention}")


if __name__ == "__main__":
    main()
