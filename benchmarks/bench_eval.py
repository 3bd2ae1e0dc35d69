"""Benchmark: ``medsae eval`` core on 8,192 SAE units × 20,000 images × 14 labels.

Builds a synthetic cache (unit-norm 512-d embeddings, CheXpert-like labels with uncertain and
blank entries) and a random ReLU SAE (512 → 8,192) in a temporary folder, then times
:func:`evaluate_job` (correlation, entropy, MS, frequency, binarised-unit F1, reconstruction)
and :func:`write_report` (CSV, NPZ, figures, HTML) separately, plus the raw-dimension run.

Usage::

    python benchmarks/bench_eval.py [--n 20000] [--units 8192] [--dim 512] [--labels 14]

Prints a table (and peak RSS); record results in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--units", type=int, default=8192)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--labels", type=int, default=14)
    ap.add_argument("--chunk-rows", type=int, default=4096)
    ap.add_argument("--no-figures", action="store_true")
    args = ap.parse_args(argv)

    from medsae_desktop.core.cache import write_cache
    from medsae_desktop.core.eval import EvalConfig, evaluate_job, write_report
    from medsae_desktop.core.progress import run_job
    from medsae_desktop.core.sae import save_sae

    rng = np.random.default_rng(0)
    n, d, k, c = args.n, args.dim, args.units, args.labels
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        t = time.perf_counter()
        # Embeddings with some label structure so correlations are not all ~0.
        y_nc = (rng.random((n, c)) < 0.15).astype(np.float32)
        dirs_cd = rng.normal(size=(c, d)).astype(np.float32)
        x_nd = rng.normal(size=(n, d)).astype(np.float32) + 0.8 * (y_nc @ dirs_cd)
        x_nd /= np.linalg.norm(x_nd, axis=1, keepdims=True)
        lab_nc = y_nc.copy()
        lab_nc[rng.random((n, c)) < 0.05] = -1.0
        lab_nc[rng.random((n, c)) < 0.10] = np.nan
        cache = write_cache(tmp_dir / "c.h5", x_nd, labels_nc=lab_nc,
                            label_names=[f"label_{j}" for j in range(c)])
        mu = x_nd.mean(0)
        scale = float(np.sqrt(d / np.mean(np.sum((x_nd - mu) ** 2, axis=1))))
        w_dec = rng.normal(size=(k, d)).astype(np.float32)
        w_dec /= np.linalg.norm(w_dec, axis=1, keepdims=True)
        b_enc = np.full(k, -2.0, np.float32)  # sparse-ish: a few % of units active per image
        save_sae(tmp_dir / "sae", {"W_enc": w_dec.T.copy(), "b_enc": b_enc, "W_dec": w_dec,
                                   "b_dec": np.zeros(d, np.float32), "input_mean": mu},
                 {"arch": "relu", "d_in": d, "d_sae": k, "input_scale": scale})
        rows.append(("build synthetic cache + SAE", time.perf_counter() - t, ""))
        del x_nd

        for kind, sae_dir in (("sae", tmp_dir / "sae"), ("raw", None)):
            cfg = EvalConfig(chunk_rows=args.chunk_rows)
            t = time.perf_counter()
            res = run_job(evaluate_job(cache, sae_dir=sae_dir, config=cfg))
            t_eval = time.perf_counter() - t
            s = res.summary
            extra = (f"alive {s['n_alive']}, mean best corr {s['mean_best_corr']:.3f}, "
                     f"mean MS {s['mean_ms']:.3f}")
            if s.get("reconstruction"):
                extra += f", L0 {s['reconstruction']['l0']:.0f}"
            rows.append((f"evaluate_job {kind} ({res.n_units} units x {n} images x {c} labels)",
                         t_eval, extra))
            t = time.perf_counter()
            write_report(res, tmp_dir / f"rep_{kind}",
                         compare_dir=(tmp_dir / "rep_sae") if kind == "raw" else None,
                         figures=not args.no_figures)
            rows.append((f"write_report {kind}", time.perf_counter() - t, ""))
            del res

    print(f"# bench_eval  {time.strftime('%Y-%m-%d')}  {platform.node()}  "
          f"{platform.processor() or platform.machine()}  cpus={os.cpu_count()}  "
          f"python {sys.version.split()[0]}  numpy {np.__version__}")
    print(f"{'step':<62} {'seconds':>8}  notes")
    for name, sec, note in rows:
        print(f"{name:<62} {sec:8.1f}  {note}")
    print(f"peak RSS {_rss_mib():.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
