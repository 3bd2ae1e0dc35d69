"""``medsae inspect`` (DESIGN.md §3): what the viewer shows for one image, headless.

Top-N features of IMAGE under the encoder + SAE, with name (annotation store, else a
``names.csv`` beside the SAE), activation and population percentile (against the SAE's
training cache, as recorded in its ``cfg.json``), and optionally the heat-map overlay PNG of
the features the viewer shows first (the strongest, plus the strongest named one when the
strongest is unnamed) at the image's default window, with the viewer's default colour map and
opacity. Computed by :mod:`medsae_desktop.core.inspection`, the code the viewer uses.
"""

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare this command's arguments."""
    p.add_argument("image", help="DICOM, PNG or JPEG file")
    p.add_argument("--sae", required=True, help="SAE checkpoint folder")
    p.add_argument("--encoder", default="demo", choices=["medclip-resnet", "medclip-swin", "demo"])
    p.add_argument("--weights", help="encoder weights folder")
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.add_argument("-o", "--output", help="overlay PNG")


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    import json
    import sys

    from tqdm import tqdm

    from medsae_desktop.core import inspection as ins
    from medsae_desktop.core.encoders import make_encoder
    from medsae_desktop.core.errors import UsageError
    from medsae_desktop.core.images import read_image
    from medsae_desktop.core.progress import run_job
    from medsae_desktop.core.sae import load_sae

    if args.top < 1:
        raise UsageError("--top must be at least 1")
    with tqdm(total=4, desc="inspect", file=sys.stderr, disable=None, leave=False) as bar:
        image = read_image(args.image)
        sae = load_sae(args.sae)
        bar.update(1)
        bar.set_postfix_str("encoder")
        encoder = make_encoder(args.encoder, weights_dir=args.weights)
        bar.update(1)
        try:
            population = None
            note = None
            cache = ins.training_cache_of(sae)
            if cache is not None:
                bar.set_postfix_str("population")
                population = run_job(ins.population_job(cache, sae))
            else:
                note = "training cache not found: no population percentiles"
            bar.update(1)
            names = ins.names_for(sae)
            res = ins.inspect_image(image, encoder, sae, population=population, names=names,
                                    top_n=args.top)
            bar.update(1)
            overlay_units = ins.default_overlay_units(res.top)
            if args.output:
                _, rgba = ins.overlay_for(res, image, overlay_units)
                from PIL import Image

                full = ins.expand_overlay(rgba, image.render_hw.shape)
                Image.fromarray(ins.composite(image.render_hw, full)).save(args.output)
        finally:
            encoder.close()
    doc = res.to_json()
    doc["image"] = str(args.image)
    doc["encoder_label"] = encoder.info.label
    doc["population_images"] = None if population is None else population.n_images
    doc["overlay"] = {"path": args.output, "units": overlay_units, "cmap": ins.DEFAULT_CMAP,
                      "opacity": ins.DEFAULT_OPACITY, "window": "default"} if args.output \
        else None
    doc["notice"] = "research use only, not for diagnosis"
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"{args.image}: {len(res.top)} of top {args.top} features active "
          f"({doc['n_active']} of {sae.d_sae} in all) — research use only, not for diagnosis")
    print(f"encoder: {encoder.info.label}; SAE {sae.sae_id[:12]}"
          + (f"; percentiles against {population.n_images} images" if population else
             f"; {note}"))
    print(f"{'rank':>4}  {'unit':>6}  {'activation':>10}  {'pctl':>6}  name")
    for i, h in enumerate(res.top, 1):
        pct = "—" if h.percentile is None else f"{h.percentile:5.1f}"
        print(f"{i:>4}  {h.unit:>6}  {h.activation:>10.4g}  {pct:>6}  {h.name}")
    if args.output:
        shown = ", ".join(f"#{u}" for u in overlay_units) or "none"
        print(f"overlay of {shown} → {args.output}")
    return 0
