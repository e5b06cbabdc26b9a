"""Helpers of ``benchmarks/gpu_check.sh`` (see there and docs/gpu-check.md).

    python benchmarks/gpu_check.py roofline OUT/roofline.json   # copy GB/s, matmul TFLOP/s
    python benchmarks/gpu_check.py resources   # Triton regs/spills/smem on this GPU
    python benchmarks/gpu_check.py sanitize    # short calls, for compute-sanitizer
    python benchmarks/gpu_check.py summary OUT                  # the one-screen summary

Imports torch and sed_kernels only (never the audio stack). ``--dry-run`` mode is chosen
by the shell script through ``GPU_CHECK_DEVICE=cpu``.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import torch

DEVICE = torch.device(os.environ.get("GPU_CHECK_DEVICE")
                      or ("cuda" if torch.cuda.is_available() else "cpu"))


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _median_seconds(fn, rounds: int) -> float:
    fn()
    times = []
    for _ in range(rounds):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _copy_seconds(nbytes: int) -> float:
    """Median seconds of one device-to-device copy of ``nbytes`` (buffers freed after)."""
    source = torch.empty(nbytes // 4, device=DEVICE).uniform_()
    target = torch.empty_like(source)
    return _median_seconds(lambda: target.copy_(source), 10)


def roofline(path: str) -> None:
    """The ceilings of this run: device copy bandwidth and bf16/fp32 matmul rates."""
    cuda = DEVICE.type == "cuda"
    nbytes = (1 << 30) if cuda else (64 << 20)
    copy = 2 * nbytes / _copy_seconds(nbytes)
    result = {"device": torch.cuda.get_device_name() if cuda else "cpu", "copy_GBps": copy / 1e9}
    n = 8192 if cuda else 512
    for dtype in (torch.bfloat16, torch.float32):
        a = torch.randn(n, n, device=DEVICE, dtype=dtype)
        b = torch.randn(n, n, device=DEVICE, dtype=dtype)
        seconds = _median_seconds(lambda: a @ b, 10 if cuda else 3)
        result[f"matmul_{str(dtype)[6:]}_TFLOPps"] = 2 * n**3 / seconds / 1e12
    result["matmul_n"] = n
    if cuda:
        props = torch.cuda.get_device_properties(DEVICE)
        result.update(sms=props.multi_processor_count, capability=f"{props.major}.{props.minor}",
                      l2_MB=getattr(props, "L2_cache_size", 0) / 2**20)
    Path(path).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


def sanitize() -> None:
    """Small forward+backward calls of the fused backends (``BACKENDS``: 'cuda', 'triton' or
    both): odd H and d_a, T no multiple of a block, a time-major (strided) h with NaN
    padding, row splits forced for Triton. Prints one line per call; exit 1 on non-finite."""
    from sed_kernels.triton import feature_attention as tfa
    from sed_kernels.triton import time_attention as tta
    from sed_kernels.triton._utils import FeatureAttentionConfig, TimeAttentionConfig

    modules = {"triton": (tta, tfa)}
    try:
        from sed_kernels.cuda import AVAILABLE
        from sed_kernels.cuda import feature_attention as cfa
        from sed_kernels.cuda import time_attention as cta

        if AVAILABLE:
            modules["cuda"] = (cta, cfa)
    except Exception as error:  # noqa: BLE001
        print("no cuda backend:", error)
    bad = False
    for B, T, H, D in [(3, 37, 37, 19), (2, 70, 64, 48)]:
        for dtype in (torch.float32, torch.bfloat16):
            gen = torch.Generator().manual_seed(B + T)
            lengths = torch.randint(1, T + 1, (B,), generator=gen)
            lengths[0], lengths[1] = T, 1
            h = torch.randn(T, B, H, generator=gen).to(DEVICE, dtype).transpose(0, 1)
            mask = (torch.arange(T)[None, :] < lengths[:, None]).to(DEVICE)
            h = h.masked_fill(~mask[..., None], float("nan"))
            lengths = lengths.to(DEVICE)
            q, g = (torch.randn(B, H, generator=gen).to(DEVICE, dtype) for _ in range(2))
            W = (torch.randn(D, H, generator=gen) / H**0.5).to(DEVICE, dtype)
            V = (torch.randn(H, D, generator=gen) / D**0.5).to(DEVICE, dtype)
            for name in os.environ.get("BACKENDS", "triton,cuda").split(","):
                if name not in modules:
                    continue
                ta, fa = modules[name]
                tkw, fkw = {}, {}
                if name == "triton":
                    tkw = {"config": TimeAttentionConfig(4, 1 << (H - 1).bit_length(), 8, 4)}
                    fkw = {"config": FeatureAttentionConfig(
                        16, 16, max(16, 1 << (D - 1).bit_length()), 16, 4)}
                out, lse = ta.forward(h, q, lengths, **tkw)
                dh, dq = ta.backward(g, h, q, lengths, out, lse, **tkw)
                fout = fa.forward(h, W, V, lengths, **fkw)
                fdh, dW, dV = fa.backward(g, h, W, V, lengths, **fkw)
                _sync()
                results = dict(out=out, dh=dh, dq=dq, fout=fout, fdh=fdh, dW=dW, dV=dV)
                nonfinite = [k for k, t in results.items() if not torch.isfinite(t).all()]
                bad |= bool(nonfinite)
                print(name, (B, T, H, D), str(dtype)[6:],
                      f"non-finite: {nonfinite}" if nonfinite else "ok", flush=True)
    sys.exit(1 if bad else 0)


def resources() -> None:
    """The Triton kernels' real registers, spills and shared memory on this GPU: forward and
    backward at the paper and wide shapes in fp32 and bf16 with the launchers' own
    configurations, then each compiled kernel's n_regs / n_spills / shared."""
    from sed_kernels.triton import feature_attention as tfa
    from sed_kernels.triton import time_attention as tta

    for label, (B, T, H, D) in {"paper": (64, 500, 256, 256),
                                "wide": (128, 300, 512, 512)}.items():
        for dtype in (torch.float32, torch.bfloat16):
            gen = torch.Generator().manual_seed(0)
            h = torch.randn(B, T, H, generator=gen).to(DEVICE, dtype)
            q, g = (torch.randn(B, H, generator=gen).to(DEVICE, dtype) for _ in range(2))
            W = (torch.randn(D, H, generator=gen) / H**0.5).to(DEVICE, dtype)
            V = (torch.randn(H, D, generator=gen) / D**0.5).to(DEVICE, dtype)
            lengths = torch.full((B,), T, device=DEVICE)
            try:
                out, lse = tta.forward(h, q, lengths)
                tta.backward(g, h, q, lengths, out, lse)
                tfa.forward(h, W, V, lengths)
                tfa.backward(g, h, W, V, lengths)
                _sync()
                print(label, str(dtype)[6:], "ran", flush=True)
            except Exception as error:  # noqa: BLE001
                print(label, str(dtype)[6:], "FAILED", repr(error)[:500], flush=True)
    failed = False
    for fn in (tta._time_attention_fwd_kernel, tta._time_attention_merge_kernel,
               tta._time_attention_bwd_kernel, tta._time_attention_dq_merge_kernel,
               tfa._feature_attention_fwd_kernel, tfa._feature_attention_bwd_kernel):
        for caches in getattr(fn, "device_caches", {}).values():
            for kernel in caches[0].values():
                try:
                    kernel._init_handles()
                    row = dict(kernel=fn.__name__, n_regs=kernel.n_regs,
                               n_spills=kernel.n_spills, shared=kernel.metadata.shared,
                               num_warps=kernel.metadata.num_warps)
                    failed |= kernel.n_spills > 0
                    print(json.dumps(row))
                except Exception as error:  # noqa: BLE001
                    print(fn.__name__, "metadata unavailable:", error)
    sys.exit(1 if failed else 0)


# ------------------------------------------------------------------------------- summary


def _pytest_line(log: Path) -> str:
    if not log.is_file():
        return "not run"
    lines = [ln for ln in log.read_text(errors="replace").splitlines()
             if re.search(r"\d+ (passed|failed|error|skipped)", ln)]
    return lines[-1].strip("= ") if lines else "no pytest summary (see the log)"


def _benchmarks(out: Path) -> list[dict]:
    rows = []
    for path in sorted(out.glob("bench*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for bench in data.get("benchmarks", []):
            extra = bench.get("extra_info", {})
            if "op" in extra:
                rows.append(dict(extra, median=bench["stats"]["median"]))
    return rows


def summary(out_dir: str) -> None:
    out = Path(out_dir)
    lines = []
    env = out / "env.txt"
    if env.is_file():
        lines += [ln for ln in env.read_text().splitlines() if ln.strip()][:4]
    roof = json.loads((out / "roofline.json").read_text()) if (out / "roofline.json").is_file() \
        else {}
    if roof:
        lines.append(f"ceilings (this run): copy {roof['copy_GBps']:.0f} GB/s, matmul "
                     f"bf16 {roof['matmul_bfloat16_TFLOPps']:.1f} / fp32 "
                     f"{roof['matmul_float32_TFLOPps']:.1f} TFLOP/s (n = {roof['matmul_n']})")
    build = out / "build.log"
    if build.is_file():
        text = build.read_text(errors="replace")
        lines.append("build: " + ("FAILED (build.log)" if "BUILD FAILED" in text
                                  or "Error" in text else "ok"))
    for name in ("tests", "tests_sync_checks", "offline_compile"):
        if (out / f"{name}.log").is_file():
            lines.append(f"{name}: {_pytest_line(out / f'{name}.log')}")
    sanitizer = out / "sanitizer.log"
    if sanitizer.is_file():
        text = sanitizer.read_text(errors="replace")
        verdicts = re.findall(r"^=== (\w+): (.*)$", text, re.M)
        lines.append("compute-sanitizer: " + ("; ".join(f"{t} {v}" for t, v in verdicts)
                                              or text.strip().splitlines()[-1][:120]))
    rows = _benchmarks(out)
    if rows:
        eager = {(r["op"], r["pass"], r["shape_label"], r["dtype"]): r["median"]
                 for r in rows if r["backend"] == "reference"}
        compiled = {(r["op"], r["pass"], r["shape_label"], r["dtype"]): r["median"]
                    for r in rows if r["backend"] == "compile"}
        peak = {"bfloat16": roof.get("matmul_bfloat16_TFLOPps"),
                "float32": roof.get("matmul_float32_TFLOPps")}
        lines.append(f"{'op':8} {'pass':7} {'shape':6} {'dtype':8} {'backend':9} {'ms':>8} "
                     f"{'x eager':>7} {'x comp':>7} {'GB/s':>7} {'%copy':>6} {'TFLOP/s':>8} "
                     f"{'%mm':>5}")
        for r in sorted(rows, key=lambda r: (r["op"], r["pass"], r["shape_label"], r["dtype"],
                                             r["backend"])):
            key = (r["op"], r["pass"], r["shape_label"], r["dtype"])
            ms = r["median"] * 1e3
            vs_eager = eager[key] / r["median"] if key in eager else float("nan")
            vs_comp = compiled[key] / r["median"] if key in compiled else float("nan")
            tflops = r.get("GFLOPps", float("nan")) / 1e3
            of_mm = 100 * tflops / peak[r["dtype"]] if peak.get(r["dtype"]) else float("nan")
            lines.append(
                f"{r['op'].split('_')[0]:8} {r['pass']:7} {r['shape_label']:6} {r['dtype']:8} "
                f"{r['backend']:9} {ms:8.3f} {vs_eager:7.2f} {vs_comp:7.2f} "
                f"{r.get('GBps', float('nan')):7.0f} {100 * r.get('fraction_of_copy', 0):6.1f} "
                f"{tflops:8.2f} {of_mm:5.1f}")
    stages = out / "stages.txt"
    if stages.is_file():
        lines.append("stages: " + " | ".join(stages.read_text().split("\n")).strip(" |"))
    text = "\n".join(lines)
    (out / "summary.txt").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "roofline":
        roofline(sys.argv[2])
    elif command == "resources":
        resources()
    elif command == "sanitize":
        sanitize()
    elif command == "summary":
        summary(sys.argv[2])
    else:
        sys.exit(__doc__)
