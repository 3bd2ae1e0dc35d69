"""``medsae name`` (DESIGN.md §3, §5.4): propose feature names, write ``NAMES.csv``.

Namers: ``labels`` (highest-correlated label), ``vocab`` (MedCLIP text embeddings of a radiology
vocabulary vs decoder directions; needs ``--medclip DIR`` with the official checkpoint and the
Bio_ClinicalBERT ``vocab.txt``), ``medgemma`` (a local MedGemma folder, e.g. a download of
``google/medgemma-4b-it``; nothing is fetched from the network).

MedGemma on a real folder::

    medsae name c.h5 --sae sae --namer medgemma --medgemma ~/models/medgemma-4b-it \\
        -o names.csv [--device cuda] [--max-units 200]
    # interrupted? the same command with --resume continues where it stopped

Names only units active on more than 60 images (the paper's rule); each gets 30 of its
top-activating images. On a CPU expect minutes per unit; a CUDA GPU (4-bit when bitsandbytes
is installed) takes seconds.
"""

import argparse
from typing import Any

from medsae_desktop.core.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare this command's arguments."""
    p.add_argument("cache", help="HDF5 embedding cache")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--sae", help="SAE checkpoint folder")
    g.add_argument("--raw", action="store_true",
                   help="name raw embedding dimensions (the baseline of score-names)")
    p.add_argument("--namer", required=True, choices=["labels", "vocab", "medgemma"])
    p.add_argument("--medgemma", help="local MedGemma folder (namer medgemma)")
    p.add_argument("-o", "--output", required=True, help="NAMES.csv")
    p.add_argument("--units", help="comma-separated units to name (default: all eligible)")
    p.add_argument("--max-units", type=int, help="name at most N units")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted medgemma run from NAMES.csv.progress.jsonl")
    g = p.add_argument_group("labels namer")
    g.add_argument("--labels", help="CheXpert-style labels CSV (else the cache's /labels)")
    g.add_argument("--uncertain", choices=["zeros", "ones", "ignore"], default="zeros")
    g.add_argument("--report", help="reuse the correlation of a 'medsae eval' report folder")
    g = p.add_argument_group("vocab namer")
    g.add_argument("--medclip", help="MedCLIP weights folder (pytorch_model.bin with the text "
                                     "tower)")
    g.add_argument("--bert-vocab", help="Bio_ClinicalBERT vocab.txt (default: MEDCLIP/vocab.txt)")
    g.add_argument("--terms", help="radiology vocabulary file, one term per line "
                                   "(default: built-in list)")
    g = p.add_argument_group("medgemma namer")
    g.add_argument("--images-root", help="folder the cache's image paths are relative to")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    g.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    g.add_argument("--quantize", default="auto", choices=["auto", "none", "4bit"],
                   help="4bit needs CUDA and bitsandbytes (auto: use it when available)")
    g.add_argument("--batch-size", type=int, default=0,
                   help="units per generate call (default 4 on CUDA, 1 on CPU)")
    g.add_argument("--max-new-tokens", type=int, default=300)
    g.add_argument("--min-active", type=int, default=61,
                   help="name only units active on at least N images (default 61)")
    g.add_argument("--seed", type=int, default=0)


def parse_units(text: str | None) -> tuple[int, ...] | None:
    """``"1,2, 5-7"`` → (1, 2, 5, 6, 7); None stays None."""
    if text is None:
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part[1:]:
                a, b = part.split("-", 1)
                out += list(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise UsageError(f"--units: cannot read {text!r} (e.g. 1,2,5-7)") from None
    if not out or min(out) < 0:
        raise UsageError("--units needs non-negative unit numbers")
    return tuple(dict.fromkeys(out))


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    from medsae_desktop.commands.eval import progress_bar
    from medsae_desktop.core.naming import NameConfig, name_units_job
    from medsae_desktop.core.progress import run_job

    if args.namer == "medgemma" and not args.medgemma:
        raise UsageError("--namer medgemma needs --medgemma DIR")
    if args.namer == "vocab" and not args.medclip:
        raise UsageError("--namer vocab needs --medclip DIR (and its Bio_ClinicalBERT vocab.txt)")
    if args.max_units is not None and args.max_units < 1:
        raise UsageError("--max-units must be at least 1")
    config = NameConfig(
        namer=args.namer, units=parse_units(args.units), max_units=args.max_units,
        min_active=args.min_active, seed=args.seed, max_new_tokens=args.max_new_tokens,
        resume=args.resume, labels_csv=args.labels, uncertain=args.uncertain,
        report_dir=args.report, images_root=args.images_root, medclip_weights=args.medclip,
        bert_vocab=args.bert_vocab, terms_file=args.terms)
    medgemma: Any = None
    if args.namer == "medgemma":
        from medsae_desktop.core.naming.medgemma import MedGemmaConfig

        medgemma = MedGemmaConfig(model_dir=args.medgemma, device=args.device, dtype=args.dtype,
                                  quantize=args.quantize, batch_size=args.batch_size)
    update, close = progress_bar(f"name ({args.namer})")
    try:
        result = run_job(name_units_job(args.cache, args.output, sae_dir=args.sae,
                                        config=config, medgemma=medgemma), update)
    finally:
        close()
    extra = f", {result.n_unparsed} unparsed answers" if args.namer == "medgemma" else ""
    resumed = f", {result.n_resumed} from the progress file" if result.n_resumed else ""
    print(f"wrote {result.output}: {len(result.names)} names ({args.namer}{extra}{resumed})")
    if result.answers is not None:
        print(f"raw answers: {result.answers}")
    return 0
