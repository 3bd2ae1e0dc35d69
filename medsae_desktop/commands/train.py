"""``medsae train`` (DESIGN.md §3): train an SAE (or a sweep of SAEs) on an embedding cache.

Examples::

    medsae train cache.h5 -o sae                       # paper configuration (relu, ×16)
    medsae train cache.h5 -o sae --arch topk --k 64
    medsae train cache.h5 -o sae --resume              # continue an interrupted run exactly
    medsae train cache.h5 -o grid --sweep l1=3e-3,1e-2,3e-2   # 3 SAEs, one pass over the data

Options left out take their defaults, or — with ``--resume`` — the interrupted run's settings
(an explicitly given option that differs from them is an error). Ctrl-C saves a resumable
checkpoint before exiting (code 130).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from medsae_desktop.core.errors import MedsaeError, UsageError

#: CLI flag → TrainConfig field, for the options that map one to one.
_FIELDS = {
    "arch": "arch", "expansion": "expansion", "l1": "l1", "k": "k", "epochs": "epochs",
    "steps": "steps", "batch_size": "batch_size", "lr": "lr", "seed": "seed",
    "val_fraction": "val_fraction", "device": "device", "precision": "precision",
    "checkpoint_every": "checkpoint_every", "resample_every": "resample_every",
    "auxk_alpha": "auxk_alpha", "buffer_rows": "buffer_rows", "kernels": "kernels",
    "log_every": "log_every",
}
_SWEEPABLE = {"l1": float, "k": int, "lr": float, "expansion": int, "arch": str,
              "auxk_alpha": float}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare this command's arguments."""
    p.add_argument("cache", help="HDF5 embedding cache")
    p.add_argument("-o", "--output", required=True, help="SAE checkpoint folder")
    p.add_argument("--arch", default=None,
                   choices=["relu", "topk", "batchtopk", "jumprelu", "matryoshka"],
                   help="architecture (default relu, as the paper)")
    p.add_argument("--expansion", type=int, help="d_sae = E · d_in (default 16)")
    p.add_argument("--l1", type=float,
                   help="sparsity coefficient: relu L1 (default 3e-2, in raw-embedding units as "
                        "the paper code; see cfg.json train.resolved.l1_effective), "
                        "jumprelu L0 (default 0.5)")
    p.add_argument("--k", type=int, help="active latents per sample, TopK family (default 64)")
    p.add_argument("--epochs", type=int,
                   help="passes over the training split (default 200, kept within 1000 steps "
                        "… 50M samples)")
    p.add_argument("--steps", type=int, help="total steps (overrides --epochs)")
    p.add_argument("--batch-size", type=int,
                   help="samples per step (default 1024; clamped to the training-set size)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default 3e-4)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in the output folder exactly")
    p.add_argument("--val-fraction", type=float,
                   help="share of image ids held out for validation (default 0.05)")
    p.add_argument("--device", help="cpu (default), cuda, cuda:N")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                   help="auto (default): bf16 autocast on CUDA, fp32 on CPU")
    p.add_argument("--checkpoint-every", type=int,
                   help="save a resumable checkpoint every N steps (default 1000)")
    p.add_argument("--resample-every", type=int,
                   help="relu: resample dead latents every N steps (default 0 = off)")
    p.add_argument("--auxk-alpha", type=float, help="AuxK loss weight (default 1/32)")
    p.add_argument("--buffer-rows", type=int,
                   help="rows per in-memory shuffle group (default 131072; bounds memory)")
    p.add_argument("--kernels", choices=["auto", "dense", "sparse"], help=argparse.SUPPRESS)
    p.add_argument("--log-every", type=int, help=argparse.SUPPRESS)
    p.add_argument("--sweep", action="append", default=[], metavar="NAME=V1,V2,...",
                   help="train one SAE per value (repeat for a grid) from one data pass, "
                        f"into OUTPUT/NAME=V; NAME in {', '.join(sorted(_SWEEPABLE))}")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")


def _explicit(args: argparse.Namespace) -> dict[str, Any]:
    return {field: getattr(args, flag) for flag, field in _FIELDS.items()
            if getattr(args, flag, None) is not None}


def _parse_sweep(items: list[str]) -> list[dict[str, Any]]:
    if not items:
        return []
    axes = []
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in _SWEEPABLE or not values:
            raise UsageError(f"bad --sweep {item!r}; expected NAME=V1,V2 with NAME in "
                             f"{', '.join(sorted(_SWEEPABLE))}")
        try:
            vals = [_SWEEPABLE[name](v) for v in values.split(",") if v.strip()]
        except ValueError as exc:
            raise UsageError(f"bad --sweep value in {item!r}: {exc}") from exc
        axes.append([(name, v) for v in vals])
    return [dict(combo) for combo in itertools.product(*axes)]


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _table(names: list[str], metrics: list[dict[str, Any]]) -> str:
    head = ["SAE", "MSE", "FVU", "L0", "dead %", "dense %", "time s", "samples/s"]
    rows = []
    for n, m in zip(names, metrics):
        rows.append([
            n, _fmt(m.get("mse"), ".4g"), _fmt(m.get("fvu"), ".4f"), _fmt(m.get("l0"), ".1f"),
            _fmt(None if m.get("dead_frac") is None else 100 * m["dead_frac"], ".1f"),
            _fmt(None if m.get("dense_frac") is None else 100 * m["dense_frac"], ".1f"),
            _fmt(m.get("time_s"), ".1f"), _fmt(m.get("samples_per_s"), ".0f")])
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                       for i, (c, w) in enumerate(zip(r, widths))) for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    from medsae_desktop.core.sae.config import TrainConfig, stored_config, validate

    # Everything that can fail on the arguments is checked before torch is imported (slow).
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be ≥ 1")
    cache = Path(args.cache)
    if not cache.is_file():
        raise MedsaeError("embedding cache not found", cache)
    out = Path(args.output)
    explicit = _explicit(args)
    combos = _parse_sweep(args.sweep)
    base_cfg = None
    if args.resume:
        if not combos:
            base_cfg = stored_config(out)
        elif (out / "sweep.json").is_file():
            base_cfg = TrainConfig.from_dict(
                json.loads((out / "sweep.json").read_text())["configs"][0])
        if base_cfg is not None:
            clash = {k: (getattr(base_cfg, k), v) for k, v in explicit.items()
                     if getattr(base_cfg, k) != v}
            if clash:
                raise UsageError("--resume: options differ from the interrupted run: " + ", ".join(
                    f"{k} was {a!r}, now {b!r}" for k, (a, b) in clash.items()))
            done = json.loads((out / "cfg.json").read_text()).get("complete") \
                if not combos else False
            if done and not (out / "resume").is_dir():
                raise MedsaeError("this training run is already complete", out)
    elif out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} already holds files; pass --resume to continue that run or "
                         "choose a new output folder")
    if base_cfg is None:
        base_cfg = TrainConfig(**explicit)
    validate(base_cfg)
    for c in combos:
        clash_key = next((k for k in c if k in explicit), None)
        if clash_key:
            raise UsageError(f"option {clash_key} is both set and swept")
        validate(dataclasses.replace(base_cfg, **c))

    # Passive OpenMP waiting: on a shared or busy machine, spinning worker threads of each
    # small torch op otherwise fight other processes for the cores (measured 5-10x slower).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    from tqdm import tqdm

    from medsae_desktop.core.progress import run_job
    from medsae_desktop.core.sae.train import sweep_job, train_job

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if combos:
        configs = [dataclasses.replace(base_cfg, **c) for c in combos]
        names = [",".join(f"{k}={v}" for k, v in c.items()) for c in combos]
        job = sweep_job(cache, out, configs, resume=args.resume, names=names)
    else:
        names = [out.name or str(out)]
        job = train_job(cache, out, base_cfg, resume=args.resume)

    stop = {"requested": False}

    def on_sigint(signum: int, frame: object) -> None:
        # First Ctrl-C: finish the current step, then the job saves a checkpoint on close.
        stop["requested"] = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    bar = tqdm(total=None, unit="step", dynamic_ncols=True, file=sys.stderr,
               disable=None, desc="train")

    def on_progress(p: Any) -> None:
        if p.total is not None and bar.total != p.total:
            bar.total = p.total
        bar.n = p.done
        if p.metrics:
            keys = [k for k in p.metrics if k.split("/")[-1] in
                    ("fvu", "l0", "dead_frac", "samples_per_s", "val_fvu")]
            bar.set_postfix({k: f"{p.metrics[k]:.3g}" for k in keys[:6]}, refresh=False)
        bar.set_description(p.message or "train", refresh=False)
        bar.refresh()
        if stop["requested"]:
            raise KeyboardInterrupt

    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        result = run_job(job, on_progress)
    except KeyboardInterrupt:
        bar.close()
        print(f"medsae train: interrupted; checkpoint saved in {out} (continue with --resume)",
              file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, old)
        bar.close()
    print(_table(names, list(result.metrics)))
    for d in result.sae_dirs:
        print(f"saved {d}")
    return 0
