"""Embedding speed: decode + preprocess, torch and ONNX encoders vs the official code path.

Measures, side by side and interleaved (the machine may be shared, so every configuration
is timed once per round, round after round, and we report the median and the best round):

- ``decode+preprocess``: PIL PNG decode of ``--size``-px renders + :func:`preprocess_render`;
- ``baseline``: the official MedCLIP path -- torchvision-layout ResNet-50 + bias-free 512
  projection, fp32, eager, NCHW, ``model(x)`` under ``no_grad`` (global embedding only);
- ``torch-fp32``: our :class:`TorchEncoder` (channels-last, BN folded, inference mode);
- ``torch-bf16``: the same with bf16 autocast;
- ``onnx-fp32``: our :class:`OnnxEncoder` on the exported graph;
- ``onnx-int8``: that graph statically quantised by onnxruntime (QOperator, per-channel int8
  weights with reduce_range for AVX2, uint8 activations, MinMax calibration on 32 *other*
  synthetic images) -- a measurement of what int8 would buy, not a shipped precision;

at batch 1 (latency, *with* the 7 x 7 per-location maps for ours) and batch 32 (throughput),
plus the FLOP floor: exact ResNet-50 multiply-adds per image (counted with hooks) x 2 over
the measured fp32/bf16 matmul rate. Weights are the demo weights (same cost as MedCLIP's).

Usage::

    python benchmarks/bench_embed.py [--rounds 3] [--batch 32] [--skip bf16,onnx]

Threads: ``--threads N`` sets torch's and onnxruntime's intra-op threads (default: each
library's own default, one per core). On a shared machine also run ``--threads 1``: it is
far less sensitive to other processes than two threads spinning at barriers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medsae_desktop.core.encoders import make_encoder, preprocess_render  # noqa: E402

from _machine import cpu_model  # sibling module in benchmarks/


def cpu_flags() -> str:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "?"
    return ",".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni",
                                "avx_vnni") if f in flags) or "none"


def matmul_gflops(torch, dtype, n=2048, reps=5) -> float:
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def resnet_macs(torch, model) -> int:
    """Multiply-adds of one 224 x 224 forward pass (convs + linear), via forward hooks."""
    macs = 0

    def hook(mod, inp, out):
        nonlocal macs
        if isinstance(mod, torch.nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            macs += out.numel() * k
        elif isinstance(mod, torch.nn.Linear):
            macs += out.numel() * mod.in_features

    hs = [m.register_forward_hook(hook) for m in model.modules()
          if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    for h in hs:
        h.remove()
    return macs


def make_pngs(n: int, size: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        img = 0.3 + 0.4 * (((yy - 0.5) / 0.4) ** 2 + ((xx - 0.3 - 0.02 * i) / 0.15) ** 2 < 1)
        img = img + 0.4 * (((yy - 0.5) / 0.4) ** 2 + ((xx - 0.7) / 0.15) ** 2 < 1)
        img = img + 0.03 * rng.standard_normal((size, size))
        buf = io.BytesIO()
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def decode_preprocess(pngs: list[bytes]) -> np.ndarray:
    return np.stack([preprocess_render(np.asarray(Image.open(io.BytesIO(b)).convert("L")))
                     for b in pngs])


def quantize_int8(fp32_path: Path, calib_bchw: np.ndarray) -> Path:
    """Static int8 copy of an exported graph (onnxruntime.quantization), next to it."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"pixels": calib_bchw[i:i + 8]}
                                 for i in range(0, len(calib_bchw), 8)])

        def get_next(self):
            return next(self.batches, None)

    pre = fp32_path.with_suffix(".pre.onnx")
    out = fp32_path.with_suffix(".int8.onnx")
    quant_pre_process(str(fp32_path), str(pre))
    # reduce_range: 7-bit weights avoid the int16 saturation of AVX2's u8*s8 dot product.
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QOperator,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True, reduce_range=True,
                    calibrate_method=CalibrationMethod.MinMax)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per config")
    ap.add_argument("--batch", type=int, default=32, help="throughput batch size")
    ap.add_argument("--latency-reps", type=int, default=5, help="batch-1 calls per round")
    ap.add_argument("--size", type=int, default=1024, help="side of the synthetic PNG renders")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch and onnxruntime intra-op threads (0 = library default)")
    ap.add_argument("--skip", default="",
                    help="comma list of configs to skip (bf16,onnx,int8)")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from medsae_desktop.core.encoders.demo import make_demo_vision
    from medsae_desktop.core.encoders.export import export_onnx
    from medsae_desktop.core.encoders.factory import cpu_has_fast_bf16

    load0 = os.getloadavg()
    print(f"# bench_embed  {dt.datetime.now().isoformat(timespec='seconds')}")
    print(f"# cpu: {cpu_model()} | {os.cpu_count()} logical cores | flags {cpu_flags()} | "
          f"torch {torch.__version__} threads {torch.get_num_threads()} | onnxruntime threads "
          f"{args.threads or 'default'}")
    print(f"# load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")

    # ---- FLOP floor -------------------------------------------------------------------------
    base = make_demo_vision().model.eval()  # plain torchvision-layout ResNet-50 + fc
    macs = resnet_macs(torch, base)
    gbf16 = matmul_gflops(torch, torch.bfloat16, n=1024, reps=2)
    gf32 = [matmul_gflops(torch, torch.float32)]  # re-measured every round (best kept)

    # ---- inputs -------------------------------------------------------------------------------
    pngs = make_pngs(args.batch, args.size)
    x = decode_preprocess(pngs)
    x1 = x[:1]

    # ---- configurations ---------------------------------------------------------------------
    configs = {}
    n_thr = {}  # images per throughput call, when fewer than --batch
    xt = torch.from_numpy(x)

    def run_baseline(xb):
        with torch.no_grad():
            return base(torch.from_numpy(xb))

    configs["baseline (official fp32 eager)"] = (run_baseline, run_baseline)
    enc32 = make_encoder("demo", precision="fp32")
    configs["torch-fp32"] = (lambda xb: enc32.encode(xb),
                             lambda xb: enc32.encode(xb, patches=True))
    if "bf16" not in skip:
        enc16 = make_encoder("demo", precision="bf16")
        configs["torch-bf16"] = (lambda xb: enc16.encode(xb),
                                 lambda xb: enc16.encode(xb, patches=True))
        if not cpu_has_fast_bf16():  # emulated bf16 is ~10x slower: time a smaller batch
            n_thr["torch-bf16"] = min(4, args.batch)
    if "onnx" not in skip:
        tmp = Path(tempfile.mkdtemp()) / "demo.onnx"
        export_onnx(enc32, tmp)
        from medsae_desktop.core.encoders.onnx_backend import OnnxEncoder

        onx = OnnxEncoder(tmp, intra_op_num_threads=args.threads)
        configs["onnx-fp32"] = (lambda xb: onx.encode(xb),
                                lambda xb: onx.encode(xb, patches=True))
        if "int8" not in skip:
            q8 = OnnxEncoder(quantize_int8(tmp, decode_preprocess(make_pngs(32, args.size,
                                                                              seed=1))),
                             intra_op_num_threads=args.threads)
            configs["onnx-int8"] = (lambda xb: q8.encode(xb),
                                    lambda xb: q8.encode(xb, patches=True))

    # ---- accuracy vs fp32 reference ---------------------------------------------------------
    with torch.no_grad():
        ref = base(xt)
    ref = (ref / ref.norm(dim=-1, keepdim=True)).numpy()
    acc = {}
    for name, (thr, _) in configs.items():
        if name.startswith("baseline"):
            continue
        emb = thr(x).embeddings_bd
        acc[name] = (float(np.min(np.sum(emb * ref, axis=1))), float(np.abs(emb - ref).max()))

    # ---- timing (interleaved) ---------------------------------------------------------------
    for _, (thr, lat) in configs.items():  # warm-up: allocator, oneDNN primitive caches
        thr(x[:4])
        lat(x1)
    t_dec, t_thr, t_lat = [], {k: [] for k in configs}, {k: [] for k in configs}
    for _ in range(args.rounds):
        gf32.append(matmul_gflops(torch, torch.float32))
        t = time.perf_counter()
        decode_preprocess(pngs)
        t_dec.append(len(pngs) / (time.perf_counter() - t))
        for name, (thr, lat) in configs.items():
            xb = x[:n_thr.get(name, len(x))]
            t = time.perf_counter()
            thr(xb)
            t_thr[name].append(len(xb) / (time.perf_counter() - t))
            reps = []
            for _ in range(args.latency_reps):
                t = time.perf_counter()
                lat(x1)
                reps.append(time.perf_counter() - t)
            t_lat[name].append(statistics.median(reps) * 1e3)

    load1 = os.getloadavg()
    g32 = max(gf32)
    print(f"# ResNet-50+proj: {macs / 1e9:.2f} G multiply-adds = {2 * macs / 1e9:.2f} GFLOP "
          f"per image")
    print(f"# matmul 2048^3 (best of rounds): fp32 {g32:.1f} GFLOP/s, bf16 {gbf16:.1f} GFLOP/s "
          f"-> FLOP floor {g32 * 1e9 / (2 * macs):.1f} img/s fp32, "
          f"{gbf16 * 1e9 / (2 * macs):.2f} img/s bf16")
    b_thr = statistics.median(t_thr["baseline (official fp32 eager)"])
    b_lat = statistics.median(t_lat["baseline (official fp32 eager)"])
    print(f"\n| stage | batch-{args.batch} img/s median (best) | x baseline | batch-1 ms "
          f"median (best) | x baseline | min cos vs fp32 | max abs diff |")
    print("|---|---|---|---|---|---|---|")
    print(f"| decode+preprocess ({args.size} px PNG) | {statistics.median(t_dec):.1f} "
          f"({max(t_dec):.1f}) | | | | | |")
    for name in configs:
        thr_med, lat_med = statistics.median(t_thr[name]), statistics.median(t_lat[name])
        cos, diff = acc.get(name, (1.0, 0.0))
        label = name + (f" [batch {n_thr[name]}]" if name in n_thr else "")
        print(f"| {label} | {thr_med:.1f} ({max(t_thr[name]):.1f}) | {thr_med / b_thr:.2f} | "
              f"{lat_med:.0f} ({min(t_lat[name]):.0f}) | {lat_med / b_lat:.2f} | "
              f"{cos:.6f} | {diff:.2e} |")
    print(f"\n# batch-1 rows of ours include the 49 per-location embeddings; the baseline's "
          f"do not. rounds={args.rounds}, latency reps/round={args.latency_reps}")
    print(f"# load average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
