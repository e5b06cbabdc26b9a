"""DenseLSTMAttention: parameter shapes, padding, and the paper's equations by hand."""

import numpy as np
import pytest
import torch

import sed_kernels
from sed_model.model import (
    UTTERANCE_VAR_FLOOR,
    VARIANTS,
    DenseLSTMAttention,
    FeatureAttentionLSTM,
    GeneralLSTM,
    LastStateLSTM,
    TimeAttentionLSTM,
    normalize_utterances,
)

CELLS = (12, 8)
N_CLASSES = 5


def make_model(variant, backend="reference", **kwargs):
    torch.manual_seed(0)
    return DenseLSTMAttention(N_CLASSES, variant, cells=CELLS, input_dim=130, backend=backend,
                              **kwargs).double().eval()


def padded_batch(lengths, garbage=1e3):
    """Random features; the padded steps hold huge values that must not matter."""
    torch.manual_seed(1)
    T = max(lengths)
    x = torch.randn(len(lengths), T, 130, dtype=torch.float64)
    for b, n in enumerate(lengths):
        x[b, n:] = garbage
    return x, torch.tensor(lengths)


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_shapes(variant):
    model = make_model(variant)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes["lstms.0.weight_ih_l0"] == (4 * 12, 130)
    assert shapes["lstms.1.weight_ih_l0"] == (4 * 8, 12)
    dense_in = 8 if variant == "lstm" else 12 + 8  # width of D, Eq. 7
    assert shapes["head.0.weight"] == (128, dense_in)
    assert shapes["head.2.weight"] == (N_CLASSES, 128)
    attention = {n: s for n, s in shapes.items() if n.startswith(("time_", "feat_"))}
    if variant == "time":  # W_i: (H_N, H_i)
        assert attention == {"time_W.0": (8, 12), "time_W.1": (8, 8)}
    elif variant == "feature":  # W_i: (d_a, H_i), V_i: (H_i, d_a), d_a = H_i
        assert attention == {"feat_W.0": (12, 12), "feat_W.1": (8, 8),
                             "feat_V.0": (12, 12), "feat_V.1": (8, 8)}
    else:
        assert attention == {}


LSTM_KEYS = [k for i in range(2) for k in (f"lstms.{i}.weight_ih_l0", f"lstms.{i}.weight_hh_l0",
                                           f"lstms.{i}.bias_ih_l0", f"lstms.{i}.bias_hh_l0")]
HEAD_KEYS = ["head.0.weight", "head.0.bias", "head.2.weight", "head.2.bias"]
CHECKPOINT_KEYS = {  # the state_dict keys, in order, of the checkpoints written so far
    "lstm": LSTM_KEYS + HEAD_KEYS,
    "general": LSTM_KEYS + HEAD_KEYS,
    "time": LSTM_KEYS + ["time_W.0", "time_W.1"] + HEAD_KEYS,
    "feature": LSTM_KEYS + ["feat_W.0", "feat_W.1", "feat_V.0", "feat_V.1"] + HEAD_KEYS,
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_keys_and_order_are_those_of_saved_checkpoints(variant):
    """Old checkpoints load (keys) and resume (the optimizer's state follows this order)."""
    model = make_model(variant)
    assert list(model.state_dict()) == CHECKPOINT_KEYS[variant]
    assert [n for n, _ in model.named_parameters()] == CHECKPOINT_KEYS[variant]
    again = DenseLSTMAttention(N_CLASSES, **model.hyperparameters())
    again.load_state_dict(model.state_dict())  # strict: same keys and shapes


def test_the_variant_name_chooses_the_class():
    classes = {"lstm": LastStateLSTM, "general": GeneralLSTM, "time": TimeAttentionLSTM,
               "feature": FeatureAttentionLSTM}
    for variant, cls in classes.items():
        model = DenseLSTMAttention(N_CLASSES, variant, cells=CELLS)
        assert type(model) is cls and model.variant == variant
        assert type(cls(N_CLASSES, cells=CELLS)) is cls
    assert type(DenseLSTMAttention(N_CLASSES, cells=CELLS)) is FeatureAttentionLSTM  # default
    with pytest.raises(ValueError, match="is variant 'time'"):
        TimeAttentionLSTM(N_CLASSES, "feature", cells=CELLS)


def test_feature_attention_dim():
    model = make_model("feature", attention_dim=3)
    assert tuple(model.feat_W[0].shape) == (3, 12) and tuple(model.feat_V[1].shape) == (8, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="variant"):
        DenseLSTMAttention(4, "dense")
    with pytest.raises(ValueError, match="cells"):
        DenseLSTMAttention(4, "lstm", cells=())
    with pytest.raises(ValueError, match="shape"):
        make_model("lstm")(torch.zeros(2, 5, 7), torch.tensor([5, 5]))


@pytest.mark.parametrize("utterance_norm", ["none", "mean_std"])
@pytest.mark.parametrize("backend", ["reference", "auto"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_padding_does_not_change_a_row(variant, backend, utterance_norm):
    """Each row alone (no padding) gives the same logits as inside a padded batch."""
    model = make_model(variant, backend, utterance_norm=utterance_norm)
    lengths = [7, 1, 4, 7, 2]  # lengths 1 and T included
    x, lens = padded_batch(lengths)
    if backend == "auto":  # the native kernels run in float32
        model, x = model.float(), x.float()
    with torch.no_grad():
        batch_logits = model(x, lens)
        for b, n in enumerate(lengths):
            alone = model(x[b : b + 1, :n], torch.tensor([n]))
            torch.testing.assert_close(batch_logits[b : b + 1], alone)
    assert torch.isfinite(batch_logits).all()


def manual_layer_outputs(model, row):
    """h_i of one unpadded row (T, 130), layer by layer with plain nn.LSTM calls."""
    outputs, h = [], row[None]
    for lstm in model.lstms:
        h, _ = lstm(h)
        outputs.append(h[0])  # (T, H_i)
    return outputs


@pytest.mark.parametrize("variant", VARIANTS)
def test_dense_input_follows_eq7(variant):
    """D of Eq. 7 computed by hand, per row, from the unpadded sequence."""
    model = make_model(variant)
    lengths = [6, 3, 1]
    x, lens = padded_batch(lengths)
    with torch.no_grad():
        d = model.dense_input(x, lens)
        for b, n in enumerate(lengths):
            hs = manual_layer_outputs(model, x[b, :n])
            last = [h[-1] for h in hs]  # last valid step of every layer
            if variant == "lstm":
                expected = last[-1]
            elif variant == "general":
                expected = torch.cat(last)
            elif variant == "time":  # Eq. 5: softmax(h_N,last W_i h_i^T) h_i
                parts = []
                for W, h in zip(model.time_W, hs):
                    weights = torch.softmax(h @ (last[-1] @ W), dim=0)  # (T,)
                    parts.append(weights @ h)
                expected = torch.cat(parts)
            else:  # Eq. 6: per step softmax over features of V tanh(W h_t); sum_t a_t o h_t
                parts = []
                for W, V, h in zip(model.feat_W, model.feat_V, hs):
                    a = torch.softmax(torch.tanh(h @ W.T) @ V.T, dim=1)  # (T, H_i)
                    parts.append((a * h).sum(dim=0))
                expected = torch.cat(parts)
            torch.testing.assert_close(d[b], expected)


def test_time_attention_matches_sdpa():
    """Independent check of the time variant: one-query scaled_dot_product_attention, scale 1."""
    model = make_model("time")
    x, lens = padded_batch([5, 2])
    with torch.no_grad():
        d = model.dense_input(x, lens)
        hs = model.lstm_outputs(x, lens)
        last_N = model.last_valid(hs[-1], lens)
        mask = torch.arange(5)[None, :] < lens[:, None]  # (B, T)
        parts = []
        for W, h in zip(model.time_W, hs):
            q = (last_N @ W)[:, None, :]  # (B, 1, H_i)
            out = torch.nn.functional.scaled_dot_product_attention(
                q, h, h, attn_mask=mask[:, None, :], scale=1.0)
            parts.append(out[:, 0])
        torch.testing.assert_close(d, torch.cat(parts, dim=1))


@pytest.mark.parametrize("variant", ["time", "feature"])
def test_forward_with_attention_weights(variant):
    model = make_model(variant)
    lengths = [6, 1, 3]
    x, lens = padded_batch(lengths)
    with torch.no_grad():
        logits, weights = model.forward_with_attention(x, lens)
        torch.testing.assert_close(logits, model(x, lens))
    assert len(weights) == len(CELLS)
    for w, width in zip(weights, CELLS):
        mask = torch.arange(6)[None, :] < lens[:, None]
        if variant == "time":
            assert w.shape == (3, 6)
            torch.testing.assert_close(w.sum(dim=1), torch.ones(3, dtype=w.dtype))
        else:
            assert w.shape == (3, 6, width)
            torch.testing.assert_close(w.sum(dim=2), mask.to(w.dtype))  # 1 per valid step
        assert (w[~mask] == 0).all()


@pytest.mark.parametrize("variant", ["lstm", "general"])
def test_no_attention_weights_without_attention(variant):
    x, lens = padded_batch([3, 2])
    assert make_model(variant).forward_with_attention(x, lens)[1] == []


def test_forward_calls_the_public_ops_with_the_backend(monkeypatch):
    calls = []
    real_time, real_feature = sed_kernels.time_attention, sed_kernels.feature_attention

    def spy(real):
        def op(*args, backend):
            calls.append(backend)
            return real(*args, backend="reference")
        return op

    monkeypatch.setattr(sed_kernels, "time_attention", spy(real_time))
    monkeypatch.setattr(sed_kernels, "feature_attention", spy(real_feature))
    x, lens = padded_batch([3, 2])
    make_model("time", backend="my-backend")(x, lens)
    make_model("feature", backend="my-backend")(x, lens)
    assert calls == ["my-backend"] * 4  # one call per layer and variant


def test_gradients_reach_every_parameter():
    for variant in VARIANTS:
        model = make_model(variant).train()
        x, lens = padded_batch([4, 2])
        model(x, lens).sum().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
        assert missing == [], (variant, missing)


def utterance_norm_by_hand(row, mode):
    """One unpadded row (T, D) normalised with numpy in float64, as the model's docstring says."""
    row = row.double().numpy()
    out = row - row.mean(axis=0)
    if mode == "mean_std":
        out = out / np.sqrt(out.var(axis=0) + UTTERANCE_VAR_FLOOR)
    return torch.from_numpy(out)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float16, 2e-2),
                                        (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("mode", ["mean", "mean_std"])
def test_utterance_norm_follows_its_formula_row_by_row(mode, dtype, tol):
    lengths = [9, 1, 4, 9, 2, 7]  # lengths 1 and T included
    torch.manual_seed(2)
    x = (torch.randn(len(lengths), max(lengths), 33) * 3 + 5).to(dtype)
    for b, n in enumerate(lengths):
        x[b, n:] = float("nan")  # poisoned padding: must not leak into a row
    got = normalize_utterances(x, torch.tensor(lengths), mode)
    assert got.dtype == dtype and got.shape == x.shape
    for b, n in enumerate(lengths):
        expected = utterance_norm_by_hand(x[b, :n], mode)
        torch.testing.assert_close(got[b, :n].double(), expected, atol=tol, rtol=tol)
        assert (got[b, n:] == 0).all()  # padded frames are set to 0
    assert normalize_utterances(x, torch.tensor(lengths), "none") is x


@pytest.mark.parametrize("mode", ["mean", "mean_std"])
def test_utterance_norm_removes_an_utterance_s_offset_and_passes_gradients(mode):
    lengths = torch.tensor([6, 3])
    x, _ = padded_batch(lengths.tolist())
    offset = torch.randn(2, 1, 130, dtype=torch.float64) * 4  # a per-utterance feature offset
    model = make_model("feature", utterance_norm=mode)
    with torch.no_grad():
        torch.testing.assert_close(model(x + offset, lengths), model(x, lengths))
    x = x.clone().requires_grad_(True)
    model(x, lengths).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[0, :6].abs().sum() > 0
    assert (x.grad[1, 3:] == 0).all()  # nothing flows into padded frames


def test_utterance_norm_is_a_checked_hyperparameter_that_old_checkpoints_lack():
    model = make_model("time", utterance_norm="mean")
    hyper = model.hyperparameters()
    assert hyper["utterance_norm"] == "mean"
    assert DenseLSTMAttention(N_CLASSES, **hyper).utterance_norm == "mean"
    del hyper["utterance_norm"]  # a checkpoint saved before the option: no normalisation
    assert DenseLSTMAttention(N_CLASSES, **hyper).utterance_norm == "none"
    with pytest.raises(ValueError, match="utterance_norm must be one of none, mean, mean_std"):
        make_model("time", utterance_norm="cmvn")
