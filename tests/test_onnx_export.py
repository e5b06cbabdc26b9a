"""ONNX export (issue 33, part 7): every variant with dynamic batch and lengths, the bundled
model on real EmoDB clips, metadata, predict on an .onnx file, a clear error without
onnxruntime."""

import json
import sys

import numpy as np
import pytest
import torch
from fixtures_corpora import EMODB_DATA, write_wav

import sed_model
from sed_model import predict
from sed_model.checkpoint import save_checkpoint
from sed_model.errors import SedError
from sed_model.export import METADATA_KEYS, export_onnx
from sed_model.export import main as export_main
from sed_model.features import Normalizer
from sed_model.model import VARIANTS, DenseLSTMAttention

pytest.importorskip("onnxruntime", reason="the [onnx] extra (onnx, onnxruntime) is not installed")
pytest.importorskip("onnx", reason="the [onnx] extra (onnx, onnxruntime) is not installed")
CLASSES = ["a", "b", "c", "d"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every test here on one torch thread (the shared fixture of conftest.py)."""


def random_checkpoint(path, variant: str, mode: str = "global", seed: int = 0,
                      utterance_norm: str = "none"):
    """A checkpoint file of an untrained model of ``variant`` with made-up statistics."""
    torch.manual_seed(seed)
    model = DenseLSTMAttention(len(CLASSES), variant, cells=(24, 16), dense=32,
                               utterance_norm=utterance_norm)
    rng = np.random.default_rng(seed)
    normalizer = Normalizer(mode, rng.normal(size=130), rng.uniform(0.5, 2.0, size=130))
    save_checkpoint(path, {"model": model.state_dict(), "hyperparameters": model.hyperparameters(),
                           "class_names": CLASSES, "normalizer": normalizer.state_dict(),
                           "config": {}, "fold": {}})
    return path


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_exports_with_dynamic_batch_and_lengths(tmp_path, variant):
    checkpoint = random_checkpoint(tmp_path / "model.pt", variant)
    out = tmp_path / "model.onnx"
    assert export_onnx(checkpoint, out) <= 1e-4
    torch_model = sed_model.load_model(checkpoint, device="cpu", backend="reference")
    onnx_model = sed_model.load_model(out)
    generator = torch.Generator().manual_seed(3)
    for lengths in [(5, 230, 1, 60, 229, 17), (3,), (90, 90)]:  # several lengths per batch
        x = torch.randn(len(lengths), max(lengths), 130, generator=generator).numpy()
        lengths = np.array(lengths, dtype=np.int64)
        expected = torch_model.members[0].probabilities(x, lengths)
        got = onnx_model.members[0].probabilities(x, lengths)
        assert got.shape == (len(lengths), len(CLASSES))
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
        # a padded row gives its own prediction: the same row alone, unpadded
        alone = onnx_model.members[0].probabilities(x[:1, :lengths[0]], lengths[:1])
        np.testing.assert_allclose(alone[0], got[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("utterance_norm", ["mean", "mean_std"])
def test_utterance_normalisation_exports_and_keeps_padded_rows_their_own(tmp_path, utterance_norm):
    checkpoint = random_checkpoint(tmp_path / "model.pt", "feature",
                                   utterance_norm=utterance_norm)
    out = tmp_path / "model.onnx"
    assert export_onnx(checkpoint, out) <= 1e-4
    torch_model = sed_model.load_model(checkpoint, device="cpu", backend="reference")
    onnx_model = sed_model.load_model(out)
    lengths = np.array([40, 1, 17, 40], dtype=np.int64)
    x = (torch.randn(4, 40, 130, generator=torch.Generator().manual_seed(5)) * 2 + 1).numpy()
    expected = torch_model.members[0].probabilities(x, lengths)
    got = onnx_model.members[0].probabilities(x, lengths)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    alone = onnx_model.members[0].probabilities(x[2:3, :17], lengths[2:3])
    np.testing.assert_allclose(alone[0], got[2], atol=1e-5, rtol=0)


def test_the_metadata_holds_classes_normalisation_and_variant(tmp_path):
    import onnx

    checkpoint = random_checkpoint(tmp_path / "model.pt", "time", mode="speaker")
    out = tmp_path / "model.onnx"
    export_main(["--checkpoint", str(checkpoint), "--onnx", str(out)])
    props = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    assert set(props) == set(METADATA_KEYS)
    assert props["class_names"] == CLASSES and props["variant"] == "time"
    assert props["normalizer"]["mode"] == "speaker" and len(props["normalizer"]["std"]) == 130
    assert props["feature_config"]["feature_set"] == "ComParE_2016"
    graph = onnx.load(str(out)).graph
    assert [i.name for i in graph.input] == ["features", "lengths"]
    assert [o.name for o in graph.output] == ["probabilities"]
    model = sed_model.load_model(out)
    assert model.class_names == CLASSES and model.variant == "time"
    assert model.members[0].normalizer.mode == "speaker"


def test_predict_runs_an_onnx_file_like_its_checkpoint(tmp_path, capsys):
    checkpoint = random_checkpoint(tmp_path / "model.pt", "feature", mode="speaker")
    out = tmp_path / "model.onnx"
    export_onnx(checkpoint, out)
    wavs = [write_wav(tmp_path / f"{i}.wav", seconds=1.0 + i / 2,
                      frequency=150.0 + 90 * i) for i in range(3)]
    predict.main(["--checkpoint", str(out), *map(str, wavs), "--json"])
    printed = json.loads(capsys.readouterr().out)
    expected = sed_model.load_model(checkpoint, device="cpu").predict(wavs)
    for p, e in zip(printed, expected):
        assert p["label"] == e.label
        np.testing.assert_allclose(list(p["probabilities"].values()),
                                   list(e.probabilities.values()), atol=1e-4)
    windowed = sed_model.load_model(out).predict(wavs[2], window=1.0, hop=0.5)[0]
    assert len(windowed.segments) == 3
    with pytest.raises(SedError, match="ONNX"):
        sed_model.load_model(out).predict(wavs[0], with_attention=True)


@pytest.mark.skipif(not EMODB_DATA.is_dir(), reason=f"EmoDB clips not present at {EMODB_DATA}")
def test_the_bundled_model_in_onnx_matches_pytorch_on_20_real_clips(tmp_path):
    out = tmp_path / "emodb.onnx"
    export_onnx("emodb", out)
    clips = sorted(EMODB_DATA.glob("*.wav"))[::20][:20]
    assert len(clips) == 20
    expected = sed_model.load_model("emodb", device="cpu", backend="reference").predict(clips)
    got = sed_model.load_model(out).predict(clips)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(list(g.probabilities.values()),
                                   list(e.probabilities.values()), atol=1e-4, rtol=0)
        assert g.label == e.label


def test_without_onnxruntime_loading_says_which_extra_to_install(tmp_path, monkeypatch, capsys):
    checkpoint = random_checkpoint(tmp_path / "model.pt", "lstm")
    out = tmp_path / "model.onnx"
    export_onnx(checkpoint, out)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    with pytest.raises(SedError, match=r"onnxruntime.*\[onnx\]"):
        sed_model.load_model(out)
    wav = write_wav(tmp_path / "a.wav", seconds=1.0)
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["--checkpoint", str(out), str(wav)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith("error: ")


def test_an_onnx_file_not_written_by_export_is_refused(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(SedError, match="bad.onnx"):
        sed_model.load_model(bad)
