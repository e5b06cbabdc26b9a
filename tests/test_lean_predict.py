"""``python -m sed_model.predict`` imports only what classifying a file needs (issue 33, point
4): no scikit-learn, no ``torch._dynamo``, no matplotlib unless plotting; and the shortcuts
that make it so give the same numbers as the libraries they stand in for."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_corpora import write_wav

from sed_kernels import backends

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("sklearn", "torch._dynamo", "matplotlib")

# Runs the command's main() on one file in a fresh interpreter, then lists the heavy modules
# it imported along the way (at import time or while classifying).
PROBE = """
import json, sys
from sed_model import predict
try:
    predict.main(sys.argv[1:])
finally:
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("sklearn", "matplotlib")
                   or m == "torch._dynamo")
    print(json.dumps(heavy), file=sys.stderr)
"""


def _heavy_modules(args: list[str]) -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stderr.strip().splitlines()[-1])


@pytest.mark.slow
def test_predict_imports_no_sklearn_dynamo_or_matplotlib(tmp_path):
    wav = write_wav(tmp_path / "a.wav", seconds=1.0)
    assert _heavy_modules([str(wav)]) == []


@pytest.mark.slow
def test_plotting_still_imports_matplotlib(tmp_path):
    wav = write_wav(tmp_path / "a.wav", seconds=1.0)
    heavy = _heavy_modules([str(wav), "--window", "0.5",
                            "--plot-timeline", str(tmp_path / "t.png")])
    assert "matplotlib" in heavy and "sklearn" not in heavy
    assert (tmp_path / "t.png").stat().st_size > 0


def test_running_moments_equal_standard_scaler_bit_for_bit():
    from sklearn.preprocessing import StandardScaler

    from sed_model.features.normalization import RunningMoments

    rng = np.random.default_rng(0)
    for _ in range(10):
        scaler, moments = StandardScaler(), RunningMoments()
        for _ in range(rng.integers(1, 6)):
            x = rng.standard_normal((rng.integers(1, 300), 130)) * rng.uniform(1e-3, 1e3, 130)
            x = (x + rng.uniform(-50, 50, 130)).astype(np.float32)
            scaler.partial_fit(x.astype(np.float64))
            moments.add(x)
        assert np.array_equal(scaler.mean_, moments.mean)
        assert np.array_equal(scaler.var_, moments.var)


def test_the_constant_result_marker_is_what_torch_sets():
    def marked():
        return None

    def ours():
        return None

    torch.compiler.assume_constant_result(marked)
    backends._assume_constant_result(ours)
    assert vars(marked) == vars(ours) == {"_dynamo_marked_constant": True}
    assert backends.resolve_backend._dynamo_marked_constant


def test_the_seeded_distribution_cache_holds_what_the_scan_finds():
    from importlib.metadata import packages_distributions

    from audobject.core import utils

    from sed_model.features import opensmile_frames

    saved = dict(utils.PACKAGES_DISTRIBUTIONS)
    utils.PACKAGES_DISTRIBUTIONS.clear()
    try:
        opensmile_frames._skip_distribution_scan()
        assert utils.PACKAGES_DISTRIBUTIONS == {"opensmile": packages_distributions()["opensmile"]}
    finally:
        utils.PACKAGES_DISTRIBUTIONS.clear()
        utils.PACKAGES_DISTRIBUTIONS.update(saved)


def test_inference_without_grad_skips_the_custom_op_with_the_same_result():
    from sed_kernels import feature_attention, time_attention

    backend = "cpu" if "cpu" in backends.available_backends("cpu") else None
    if backend is None:
        pytest.skip("the native cpu backend is not built")
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 7, 16, generator=g, requires_grad=True)
    q, W, V = (torch.randn(*s, generator=g) for s in ((3, 16), (8, 16), (16, 8)))
    lengths = torch.tensor([7, 4, 1])
    with_graph = (time_attention(h, q, lengths, backend=backend),
                  feature_attention(h, W, V, lengths, backend=backend))
    with torch.no_grad():
        direct = (time_attention(h, q, lengths, backend=backend),
                  feature_attention(h, W, V, lengths, backend=backend))
    for a, b in zip(with_graph, direct):
        assert a.grad_fn is not None and b.grad_fn is None
        assert torch.equal(a.detach(), b)
