"""Data-parallel training: 2 CPU processes (gloo, started by torchrun) against one process.

The two-process run must take the same steps as a single process with the same global
batch size and seed: the same final weights (up to summation order) and the same metrics.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sed_model import distributed
from sed_model.checkpoint import load_checkpoint, read_json
from sed_model.config import make_config
from sed_model.model import DenseLSTMAttention
from sed_model.runtime import RunOptions
from sed_model.trainer import train

pytestmark = [pytest.mark.usefixtures("outside_source_tree"), pytest.mark.slow]

# 2 folds of 2 synthetic speakers, 16 training files each: 2 batches of 8 per epoch, and a
# last batch of 1 for --batch-size 5 (so one rank gets an empty shard).
# The demo preset has no dropout: dropout masks are drawn per rank, so with dropout N ranks
# do not reproduce one process's steps exactly (only in distribution).
OPTIONS = dict(corpus="csv", preset="demo", variant="feature", folds="2", steps=5, batch_size=5,
               eval_every=2, cells=(8, 6), lr=1e-2, device="cpu", backend="cpu", seed=7)


def test_shards_are_disjoint_and_cover_the_global_batch():
    batch = np.array([9, 4, 7, 1, 3])
    shards = [distributed.shard(batch, r, 2) for r in range(2)]
    assert [s.tolist() for s in shards] == [[9, 4, 7], [1, 3]]
    assert distributed.shard(np.array([5]), 1, 2).tolist() == []  # an empty shard
    assert distributed.shard(batch).tolist() == batch.tolist()  # one process: everything
    assert distributed.world_size() == 1 and distributed.is_main()


def test_two_gloo_processes_match_one_process_and_resume_its_run(
    corpus, tmp_path, one_torch_thread
):
    manifest, env = corpus
    single = train(make_config(data=str(manifest), **OPTIONS), tmp_path / "single",
                   options=RunOptions(progress=False, workers=1)).to_json()
    with pytest.raises(Killed):  # a single-process run stopped in fold 1, resumed by 2 ranks
        train(make_config(data=str(manifest), **OPTIONS), tmp_path / "resumed",
              options=RunOptions(progress=False, workers=1), on_checkpoint=kill_at("fold-01", 2))

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2",
               "-m", "sed_model.train", "--corpus", "csv", "--preset", "demo",
               "--data", str(manifest), "--variant", "feature", "--folds", "2", "--set", "steps=5",
               "--set", "batch_size=5",
               "--set", "eval_every=2", "--set", "cells=8,6", "--set", "lr=0.01",
               "--device", "cpu",
               "--set", "backend=cpu", "--seed", "7", "--threads", "1", "--workers", "1",
               "--no-progress", "--out-dir", str(tmp_path / "ddp")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run folder:") == 1  # only rank 0 prints
    assert done.stdout.count("feature seed 7 fold 2/2") == 1
    assert not list((tmp_path / "ddp").rglob("*.tmp"))

    resume = [*command[:command.index("--corpus")], "--resume",
              "--out-dir", str(tmp_path / "resumed"),
              "--threads", "1", "--workers", "1", "--no-progress"]
    done = subprocess.run(resume, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    compare_runs(single, tmp_path / "single", tmp_path / "ddp")
    compare_runs(single, tmp_path / "single", tmp_path / "resumed")


class Killed(Exception):
    pass


def kill_at(fold, at_step):
    def on_checkpoint(path, step):
        if (path.parent.name, step) == (fold, at_step):
            raise Killed
    return on_checkpoint


def compare_runs(single: dict, single_dir: Path, other_dir: Path) -> None:
    """Same steps, metrics and (up to summation order) weights as the single-process run."""
    ddp = read_json(other_dir / "metrics.json")
    for a, b in zip(single["folds"], ddp["folds"]):
        steps = [p["step"] for p in a["history"]]
        assert steps == [p["step"] for p in b["history"]] == [0, 2, 4, 5]
        assert [p["uar"] for p in a["history"]] == [p["uar"] for p in b["history"]]
        assert a["final"]["confusion"] == b["final"]["confusion"]
        assert [p["train_loss"] for p in b["history"][1:]] == pytest.approx(
            [p["train_loss"] for p in a["history"][1:]], rel=1e-5)
    for fold in ("fold-01", "fold-02"):
        a = load_checkpoint(single_dir / fold / "last.pt")
        b = load_checkpoint(other_dir / fold / "last.pt")
        assert a["step"] == b["step"] == 5
        for name, tensor in a["model"].items():
            torch.testing.assert_close(b["model"][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    torch.manual_seed(7)
    initial = DenseLSTMAttention(n_classes=4, **a["hyperparameters"]).state_dict()
    moved = max((a["model"][n] - initial[n]).abs().max().item() for n in initial)
    assert moved > 1e-3  # training changed the weights: the comparison is not vacuous


def test_a_user_error_on_rank_0_stops_every_rank(corpus, tmp_path):
    """An existing run folder is found by rank 0; rank 1 must stop too, not wait forever."""
    manifest, env = corpus
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2",
               "-m", "sed_model.train", "--corpus", "csv", "--data", str(manifest),
               "--set", "steps=1",
               "--device", "cpu", "--threads", "1", "--workers", "1", "--no-progress",
               "--out-dir", str(tmp_path / "run")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    # Both ranks write to one stderr at once, so their lines may interleave: count messages.
    assert done.stderr.count("error: ") == 2, done.stderr
    assert done.stderr.count("already holds a run") == 2, done.stderr


RANK_SCRIPT = """
import sys, torch
from sed_model import distributed
from sed_model.data import load_dataset
distributed.init(torch.device("cpu"))
dataset = distributed.main_first(
    lambda: load_dataset("csv", sys.argv[1], workers=1, progress=False), then_others=True)
with open("/proc/self/maps") as maps:
    mapped = sorted({line.split()[-1] for line in maps if line.rstrip().endswith("frames.npy")})
rows = dataset.features.subset(distributed.shard(list(range(len(dataset.features)))))
print(f"rank {distributed.rank()} maps {','.join(mapped)} rows {len(rows)}", flush=True)
distributed.teardown()  # a process group left to interpreter exit may abort in gloo's threads
"""


def test_ranks_map_one_feature_store(corpus, tmp_path):
    """Under torchrun every rank maps the same store file (no copy of the corpus per rank)."""
    manifest, env = corpus
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", str(script), str(manifest)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = sorted(line for line in done.stdout.splitlines() if line.startswith("rank "))
    assert len(lines) == 2, done.stdout
    files = {line.split()[3] for line in lines}
    assert len(files) == 1 and "/stores/frames-" in files.pop()
    assert sum(int(line.split()[-1]) for line in lines) == 32  # the shards cover the corpus
