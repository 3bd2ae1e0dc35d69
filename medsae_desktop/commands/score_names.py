"""``medsae score-names`` (DESIGN.md §3, §5.4): naming accuracy with MedGemma.

The paper's protocol: per named unit, 30 top-activating + 30 non-activating images, asked in
chunks of 5, accuracy = (TP + TN) / 60; baselines: shuffled names (on by default) and raw
embedding dimensions (``--raw-names RAW_NAMES.csv`` from ``medsae name --raw``). Writes
``SCORES.csv``, ``SCORES.summary.json`` and ``SCORES.png`` (the three accuracy distributions).
"""

import argparse

from medsae_desktop.core.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare this command's arguments."""
    p.add_argument("cache", help="HDF5 embedding cache")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--sae", help="SAE checkpoint folder")
    g.add_argument("--raw", action="store_true", help="the names are of raw embedding dimensions")
    p.add_argument("--names", required=True, help="NAMES.csv")
    p.add_argument("--medgemma", required=True, help="local MedGemma folder")
    p.add_argument("-o", "--output", required=True, help="SCORES.csv")
    p.add_argument("--raw-names", help="names of raw dimensions: adds the raw-embedding baseline")
    p.add_argument("--no-shuffled", action="store_true",
                   help="skip the shuffled-name (random explanation) baseline")
    p.add_argument("--units", help="comma-separated units to score (default: every named unit)")
    p.add_argument("--max-units", type=int, help="score at most N units per condition")
    p.add_argument("--per-side", type=int, default=30,
                   help="activating and non-activating images per unit (default 30)")
    p.add_argument("--chunk", type=int, default=5, help="images per MedGemma query (default 5)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from SCORES.csv.progress.jsonl")
    p.add_argument("--images-root", help="folder the cache's image paths are relative to")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    p.add_argument("--quantize", default="auto", choices=["auto", "none", "4bit"])
    p.add_argument("--batch-size", type=int, default=0,
                   help="queries per generate call (default 4 on CUDA, 1 on CPU)")
    p.add_argument("--max-new-tokens", type=int, default=500,
                   help="tokens per answer (official 500; 20 is enough for a 5-item list)")


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    from medsae_desktop.commands.eval import progress_bar
    from medsae_desktop.commands.name import parse_units
    from medsae_desktop.core.eval.naming_accuracy import ScoreConfig, score_names_job
    from medsae_desktop.core.naming.medgemma import MedGemmaConfig
    from medsae_desktop.core.progress import run_job

    if args.per_side < 1 or args.chunk < 1:
        raise UsageError("--per-side and --chunk must be at least 1")
    if args.max_units is not None and args.max_units < 1:
        raise UsageError("--max-units must be at least 1")
    config = ScoreConfig(per_side=args.per_side, chunk=args.chunk, seed=args.seed,
                         shuffled=not args.no_shuffled, max_new_tokens=args.max_new_tokens,
                         units=parse_units(args.units), max_units=args.max_units,
                         resume=args.resume, images_root=args.images_root)
    medgemma = MedGemmaConfig(model_dir=args.medgemma, device=args.device, dtype=args.dtype,
                              quantize=args.quantize, batch_size=args.batch_size)
    update, close = progress_bar("score-names")
    try:
        result = run_job(score_names_job(args.cache, args.names, args.output, medgemma,
                                         sae_dir=args.sae, raw_names_csv=args.raw_names,
                                         config=config), update)
    finally:
        close()
    print(f"wrote {result.output}" + (f" and {result.plot}" if result.plot else ""))
    for cond, s in result.summary["conditions"].items():
        mean = "n/a" if s["mean_accuracy"] is None else f"{s['mean_accuracy']:.3f}"
        std = "" if s["std_accuracy"] is None else f" ± {s['std_accuracy']:.3f}"
        print(f"{cond:<10} {s['n_units']:>5} units  accuracy {mean}{std}  "
              f"({s['n_unparsed_chunks']} unparsed answers)")
    return 0
