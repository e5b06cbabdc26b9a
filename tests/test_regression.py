"""Results do not move when the code is reorganised: two small runs against saved results.

``data/golden_results.json`` holds the fold results, summaries and deployment model of two
runs made by the code before the typed recipe and results (main at ac76ab9): the demo corpus
(demo recipe, 2 folds, 2 epochs) and 63 EmoDB files of 4 speakers as a CSV manifest (the
small recipe with its augmentation and without utterance normalisation, 2 folds, 2 epochs),
both on the reference kernels with one thread. Made there with
``train(TrainConfig(**options), ...)``; here the same options go through :func:`make_config`.
Integers, strings and confusion matrices must be equal; floats equal to 1e-6 relative (on the
machine that made them they are equal bit for bit; another instruction set may change the
last bits of a loss).
"""

import csv
import json
import math
from pathlib import Path

import pytest
from fixtures_corpora import EMODB_DATA

from sed_model.config import make_config
from sed_model.runtime import RunOptions
from sed_model.trainer import train

GOLDEN = json.loads((Path(__file__).parent / "data" / "golden_results.json").read_text())
EMOTIONS = dict(zip("WLEAFTN", ["anger", "boredom", "disgust", "fear", "happiness", "sadness",
                                "neutral"]))


def assert_same(saved, now, where="result"):
    """Equal structure and values; floats to 1e-6 relative."""
    if isinstance(saved, float) or isinstance(now, float):
        assert math.isclose(saved, now, rel_tol=1e-6, abs_tol=1e-9), f"{where}: {saved} != {now}"
    elif isinstance(saved, dict):
        assert saved.keys() == now.keys(), f"{where}: keys {sorted(saved)} != {sorted(now)}"
        for key in saved:
            assert_same(saved[key], now[key], f"{where}.{key}")
    elif isinstance(saved, list):
        assert len(saved) == len(now), f"{where}: {len(saved)} items != {len(now)}"
        for i, (a, b) in enumerate(zip(saved, now)):
            assert_same(a, b, f"{where}[{i}]")
    else:
        assert saved == now, f"{where}: {saved!r} != {now!r}"


def check(options: dict, out: Path, golden: dict) -> None:
    result = train(make_config(**options), out, options=RunOptions(progress=False,
                   workers=2)).to_json()
    for key in ("folds", "summary", "final_model"):
        assert_same(golden[key], result[key], key)


@pytest.mark.slow
def test_the_demo_gives_the_saved_results(tmp_path, one_torch_thread):
    check(dict(corpus="demo", folds="2", epochs=2, device="cpu", backend="reference"),
          tmp_path / "demo", GOLDEN["demo"])


@pytest.mark.slow
@pytest.mark.skipif(not EMODB_DATA.is_dir(), reason="needs ../shared/data/emodb")
def test_an_emodb_subset_gives_the_saved_results(tmp_path, one_torch_thread):
    files = sorted(p for p in EMODB_DATA.glob("*.wav") if p.name[:2] in ("03", "08", "09", "10"))
    manifest = tmp_path / "emodb.csv"
    with open(manifest, "w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["path", "label", "speaker"])
        rows.writerows([str(p), EMOTIONS[p.name[5]], p.name[:2]] for p in files[::3])
    # the small recipe as it was when the results were saved: no utterance normalisation
    check(dict(corpus="csv", data=str(manifest), preset="small", folds="2", epochs=2,
               device="cpu", backend="reference", utterance_norm="none"),
          tmp_path / "emodb", GOLDEN["emodb"])
