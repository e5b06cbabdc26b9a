"""Crash safety and mixed precision.

* A training process killed with SIGKILL after a few checkpoints and resumed with
  ``--resume`` ends exactly like an uninterrupted run with the same seed.
* ``--resume`` on a truncated ``last.pt`` is a one-line ``error:`` naming the file and what
  to do, exit status 2. (A corrupt feature-cache file is recomputed: tests/test_features.py.)
* bf16 autocast on the CPU through the model with the ``cpu`` and ``reference`` attention
  backends; fp16 on the CPU is a clear error.
"""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sed_model import cpu_support
from sed_model.checkpoint import load_checkpoint, read_json
from sed_model.config import make_config
from sed_model.errors import SedError
from sed_model.model import DenseLSTMAttention
from sed_model.runtime import RunOptions
from sed_model.trainer import train

pytestmark = pytest.mark.usefixtures("outside_source_tree")

# Checkpoints at every step, so the process is killed in the middle of fold 1.
OPTIONS = dict(
    corpus="csv",
    variant="time",
    folds="2",
    steps=30,
    batch_size=4,
    eval_every=1,
    cells=(8, 6),
    lr=1e-2,
    device="cpu",
    backend="cpu",
    seed=3,
)
ARGS = [
    "--corpus",
    "csv",
    "--variant",
    "time",
    "--folds",
    "2",
    "--set",
    "steps=30",
    "--set",
    "batch_size=4",
    "--set",
    "eval_every=1",
    "--set",
    "cells=8,6",
    "--set",
    "lr=0.01",
    "--device",
    "cpu",
    "--set",
    "backend=cpu",
    "--seed",
    "3",
]
QUIET = ["--threads", "1", "--workers", "1", "--no-progress"]


def run_train(args, env):
    return subprocess.run(
        [sys.executable, "-m", "sed_model.train", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def kill_after_checkpoints(args, env, last: Path, writes: int) -> None:
    """Start training, SIGKILL it once ``last`` has been (re)written ``writes`` times."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sed_model.train", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    # Every atomic write replaces the file, so its (inode, mtime) changes. Count changes
    # rather than distinct inodes: ext4 hands the freed inode back, so two writes apart the
    # file can carry the same inode number again.
    seen, previous, deadline = 0, None, time.monotonic() + 120
    try:
        while seen < writes and proc.poll() is None and time.monotonic() < deadline:
            try:
                stat = last.stat()
            except FileNotFoundError:
                stat = None
            if stat is not None and (stat.st_ino, stat.st_mtime_ns) != previous:
                seen, previous = seen + 1, (stat.st_ino, stat.st_mtime_ns)
            time.sleep(0.005)
        proc.kill()
    finally:
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == -9, f"not killed mid-run (status {proc.returncode}): {stderr[-2000:]}"


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_same_result(corpus, tmp_path, one_torch_thread):
    manifest, env = corpus
    reference = train(
        make_config(data=str(manifest), **OPTIONS),
        tmp_path / "reference",
        options=RunOptions(progress=False, workers=1)).to_json()

    run = tmp_path / "killed"
    args = [*ARGS, "--data", str(manifest), *QUIET, "--out-dir", str(run)]
    kill_after_checkpoints(args, env, run / "fold-01" / "last.pt", writes=3)
    killed_at = load_checkpoint(run / "fold-01" / "last.pt")["step"]
    assert 1 <= killed_at < 30 and not (run / "fold-01" / "metrics.json").exists()

    # a truncated last.pt (a disk that filled up, a bad copy): one clear line, status 2
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    last = broken / "fold-01" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    done = run_train(["--resume", "--out-dir", str(broken), *QUIET], env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert str(last) in lines[0] and "delete it" in lines[0]

    done = run_train(["--resume", "--out-dir", str(run), *QUIET], env)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = read_json(run / "metrics.json")
    assert resumed["folds"] == reference["folds"]  # history, final, best: identical
    for fold in ("fold-01", "fold-02"):
        a = load_checkpoint(tmp_path / "reference" / fold / "last.pt")
        b = load_checkpoint(run / fold / "last.pt")
        assert a["step"] == b["step"] == 30
        for name, tensor in a["model"].items():
            assert torch.equal(tensor, b["model"][name]), name
        for key in ("rng", "optimizer", "scaler", "fold"):
            assert key in b


# ------------------------------------------------------------------------ mixed precision
# oneDNN's bf16 LSTM exists only on CPUs with AVX-512; elsewhere a bf16 run must stop with one
# line before any work, and that line is what these tests check there.
BF16_LSTM = cpu_support.bf16_lstm_supported()
needs_bf16_lstm = pytest.mark.skipif(
    not BF16_LSTM, reason="this CPU has no oneDNN bf16 LSTM (AVX2 only): the refusal is tested"
)


@needs_bf16_lstm
@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("variant", ["time", "feature"])
def test_the_model_runs_under_cpu_bf16_autocast(backend, variant, one_torch_thread):
    torch.manual_seed(0)
    model = DenseLSTMAttention(
        n_classes=4, variant=variant, cells=(8, 6), attention_dim=5, dense=6, backend=backend
    )
    x, lengths = torch.randn(3, 7, 130), torch.tensor([7, 5, 2])
    expected = model(x, lengths)  # fp32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x, lengths)
    logits.float().sum().backward()
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), expected, atol=0.05, rtol=0.05)  # bf16: ~3 digits
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@needs_bf16_lstm
def test_bf16_training_on_the_cpu(corpus, tmp_path, one_torch_thread):
    manifest, _ = corpus
    options = {**OPTIONS, "steps": 4, "eval_every": 2, "data": str(manifest)}
    metrics = train(make_config(precision="bf16", **options), tmp_path / "bf16",
                    options=RunOptions(progress=False, workers=1)).to_json()
    assert metrics["config"]["precision"] == "bf16"
    assert [p["step"] for p in metrics["folds"][0]["history"]] == [0, 2, 4]
    assert all(
        p["train_loss"] is None or p["train_loss"] > 0 for p in metrics["folds"][0]["history"]
    )


@pytest.mark.skipif(BF16_LSTM, reason="this CPU runs oneDNN's bf16 LSTM: bf16 training is tested")
def test_bf16_on_a_cpu_without_bf16_lstm_is_one_error_line_before_any_work(corpus, tmp_path):
    manifest, env = corpus
    out = tmp_path / "bf16"
    done = run_train(
        [*ARGS, "--data", str(manifest), "--set", "precision=bf16", *QUIET, "--out-dir",
         str(out)], env
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: precision bf16 "), (
        done.stderr
    )
    assert "AVX-512" in done.stderr and "--precision fp32" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()


def test_fp16_on_the_cpu_and_unknown_precisions_are_refused(corpus, tmp_path, one_torch_thread):
    manifest, _ = corpus
    options = {**OPTIONS, "steps": 4, "eval_every": 2, "data": str(manifest)}
    with pytest.raises(SedError, match="fp16 needs a CUDA GPU"):
        train(make_config(precision="fp16", **options), tmp_path / "fp16",
              options=RunOptions(progress=False, workers=1))
    with pytest.raises(SedError, match="precision must be one of"):
        make_config(precision="fp8")
    assert not (tmp_path / "fp16").exists()
