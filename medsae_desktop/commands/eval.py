"""``medsae eval`` (DESIGN.md §3, §5.3): correlation, entropy, monosemanticity, F1, reconstruction.

``medsae eval c.h5 --sae sae -o rep`` evaluates SAE latents; ``medsae eval c.h5 --raw -o rep_raw``
the embedding dimensions on the same images; ``--compare rep_raw`` adds a side-by-side verdict.
"""

import argparse
import sys
from collections.abc import Callable
from typing import Any

from medsae_desktop.core.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare this command's arguments."""
    p.add_argument("cache", help="HDF5 embedding cache")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--sae", help="SAE checkpoint folder")
    g.add_argument("--raw", action="store_true", help="evaluate raw embedding dimensions")
    p.add_argument("-o", "--output", required=True, help="report folder")
    p.add_argument("--labels", help="CheXpert-style labels CSV (else the cache's /labels)")
    p.add_argument("--images-root", help="folder the cache's image paths are relative to, for "
                                         "matching --labels rows (default: the CSV's folder)")
    p.add_argument("--uncertain", choices=["zeros", "ones", "ignore"], default="zeros",
                   help="uncertain (-1) labels become 0, 1, or are left out (default zeros; "
                        "blank labels are always 0)")
    p.add_argument("--balanced", type=int, metavar="N",
                   help="evaluate the official balanced subset with N images per label "
                        "(e.g. 200 for 'CheXpert 5x200'-style)")
    p.add_argument("--compare", metavar="OTHER_REPORT",
                   help="another report folder (e.g. --raw) to compare against")
    p.add_argument("--chunk-rows", type=int, default=4096, help="images per chunk (default 4096)")
    p.add_argument("--memory-mb", type=int, default=2048,
                   help="memory for activation columns kept for F1 thresholds (default 2048)")
    p.add_argument("--no-f1", action="store_true",
                   help="skip precision/recall/F1 of binarised units")
    p.add_argument("--no-figures", action="store_true", help="skip PNG figures and report.html")


def progress_bar(desc: str) -> tuple[Callable[[Any], None], Callable[[], None]]:
    """A tqdm bar on stderr driven by :class:`Progress` reports; returns (update, close)."""
    from tqdm import tqdm

    bars: list[Any] = []

    def update(p: Any) -> None:
        if not bars:
            if p.total is None:
                return  # set-up reports ("opening cache"): no bar until work is counted
            # disable=None: no bar when stderr is not a terminal, so logs and error output
            # stay one line per problem.
            bars.append(tqdm(total=p.total, desc=desc, file=sys.stderr, leave=False,
                             dynamic_ncols=True, disable=None))
        bar = bars[0]
        if p.total is not None and bar.total != p.total:
            bar.total = p.total
        bar.n = p.done
        if p.message:
            bar.set_postfix_str(p.message[:60], refresh=False)
        bar.refresh()

    def close() -> None:
        for b in bars:
            b.close()

    return update, close


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    from medsae_desktop.core.eval import (
        EvalConfig, comparison_lines, evaluate_job, load_report, write_report)
    from medsae_desktop.core.progress import run_job

    if args.chunk_rows < 1:
        raise UsageError("--chunk-rows must be at least 1")
    if args.balanced is not None and args.balanced < 1:
        raise UsageError("--balanced must be at least 1")
    if args.memory_mb < 1:
        raise UsageError("--memory-mb must be at least 1")
    if args.compare is not None:
        load_report(args.compare)  # fail before the long job, not after
    config = EvalConfig(uncertain=args.uncertain, balanced=args.balanced,
                        chunk_rows=args.chunk_rows, memory_mb=args.memory_mb,
                        f1=not args.no_f1)
    update, close = progress_bar("eval")
    try:
        result = run_job(evaluate_job(args.cache, sae_dir=args.sae, labels_csv=args.labels,
                                      images_root=args.images_root, config=config), update)
    finally:
        close()
    out = write_report(result, args.output, compare_dir=args.compare,
                       figures=not args.no_figures)
    s = result.summary
    print(f"wrote {out}: {s['n_units']} {s['kind']} units on {s['n_images']} images, "
          f"{s['n_alive']} alive, mean best corr {_f(s['mean_best_corr'])}, "
          f"mean best entropy {_f(s['mean_best_entropy'])}, mean MS {_f(s['mean_ms'])}")
    if s.get("reconstruction"):
        r = s["reconstruction"]
        print(f"reconstruction: FVU {_f(r.get('fvu'))}, MSE {_f(r.get('mse'))}, "
              f"L0 {_f(r.get('l0'))}, dead {_f(r.get('dead_fraction'))}")
    if args.compare is not None:
        import json

        comp = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
        for line in comparison_lines(comp):
            print(line)
    return 0


def _f(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.4f}"
