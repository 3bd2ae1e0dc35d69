"""``medsae embed`` (DESIGN.md §3): images → HDF5 embedding cache, resumable."""

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare this command's arguments."""
    p.add_argument("input", help="folder of images or CheXpert-style CSV with a Path column")
    p.add_argument("-o", "--output", required=True, help="HDF5 cache path")
    p.add_argument("--encoder", required=True, choices=["medclip-resnet", "medclip-swin", "demo"])
    p.add_argument("--weights", help="folder with pytorch_model.bin or model.safetensors")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    p.add_argument("--labels", help="CheXpert-style labels CSV")
    p.add_argument("--patches", action="store_true", help="also store per-location embeddings")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                   help="storage type of /embeddings in a new cache (default float32)")
    p.add_argument("--segment-rows", type=int, default=256, metavar="N",
                   help="images per crash-safe segment (default 256; a kill loses at most "
                        "this many, or 30 s of work)")


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    from pathlib import Path

    from tqdm import tqdm

    from medsae_desktop.core.encoders import make_encoder
    from medsae_desktop.core.errors import MedsaeError, UsageError
    from medsae_desktop.core.pipeline import embed_job
    from medsae_desktop.core.progress import Progress, run_job

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.segment_rows < 1:
        raise UsageError(f"--segment-rows must be at least 1, got {args.segment_rows}")
    if not Path(args.input).exists():
        raise MedsaeError("input not found", args.input)  # before loading a model
    if args.labels is not None and not Path(args.labels).is_file():
        raise MedsaeError("labels CSV not found", args.labels)

    def build_encoder():  # type: ignore[no-untyped-def]
        # Called by the job only when something new must be embedded: a re-run over a
        # complete cache never pays for loading the model.
        return make_encoder(args.encoder, weights_dir=args.weights, backend=args.backend,
                            device=args.device)

    job = embed_job(args.input, args.output, build_encoder, labels_csv=args.labels,
                    patches=args.patches, batch_size=args.batch_size, dtype=args.dtype,
                    segment_rows=args.segment_rows)
    with tqdm(unit="img", desc="embed", file=sys.stderr, disable=None,
              dynamic_ncols=True) as bar:
        def on_progress(p: Progress) -> None:
            if p.total is not None and bar.total != p.total:
                bar.total = p.total
            bar.set_postfix(new=int(p.metrics.get("new", 0)),
                            img_s=f"{p.metrics.get('images_per_s', 0.0):.1f}", refresh=False)
            bar.update(p.done - bar.n)

        res = run_job(job, on_progress)

    parts = [f"{res.n_new} new", f"{res.n_known} already in cache"]
    if res.n_duplicates:
        parts.append(f"{res.n_duplicates} duplicates")
    parts.append(f"{res.n_unreadable} unreadable")
    if res.n_unlabelled:
        parts.append(f"{res.n_unlabelled} new without a labels row")
    line = (f"embedded {', '.join(parts)}; {res.cache_path} holds {res.n_total} images; "
            f"{res.seconds:.1f} s ({res.images_per_s:.1f} images/s)")
    if res.skipped_report is not None:
        line += f"; unreadable files listed in {res.skipped_report}"
    print(line)
    if res.n_unreadable and res.n_unreadable == res.n_inputs:
        raise MedsaeError(f"none of the {res.n_inputs} images could be read "
                          f"(see {res.skipped_report})", args.input)
    return 0
