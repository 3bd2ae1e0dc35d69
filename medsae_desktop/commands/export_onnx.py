"""``medsae export-onnx`` (DESIGN.md §3): encoder (+ SAE) -> one ONNX graph.

The graph takes preprocessed ``pixels`` (B, 3, 224, 224) and outputs ``embedding``,
``patch_embeddings`` and, with ``--sae``, ``sae_codes`` and ``sae_patch_preacts``; see
:mod:`medsae_desktop.core.encoders.export`. Needs torch (export only; running the result
needs onnxruntime only).
"""

import argparse
import sys

from medsae_desktop.core.errors import MedsaeError, UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare this command's arguments."""
    p.add_argument("--encoder", required=True, choices=["medclip-resnet", "medclip-swin", "demo"])
    p.add_argument("--weights", help="encoder weights folder")
    p.add_argument("--sae", help="SAE checkpoint folder")
    p.add_argument("-o", "--output", required=True, help="MODEL.onnx")


def _check_sae_matches(sae: object, info_json: dict, sae_dir: str) -> None:
    """An SAE trained on another encoder's embeddings would give meaningless codes."""
    enc = getattr(sae, "cfg", {}).get("encoder") or {}
    for field in ("key", "weights_sha256"):
        if enc.get(field) not in (None, info_json[field]):
            raise MedsaeError(
                f"SAE was trained on encoder {enc.get('key')!r} (weights "
                f"{str(enc.get('weights_sha256'))[:12]}), not {info_json['key']!r} (weights "
                f"{info_json['weights_sha256'][:12]})", sae_dir)


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    if args.encoder != "demo" and not args.weights:
        raise UsageError(f"--encoder {args.encoder} needs --weights DIR")
    from medsae_desktop.core.encoders import make_encoder
    from medsae_desktop.core.encoders.export import export_onnx

    sae = None
    if args.sae:
        from medsae_desktop.core.sae import load_sae

        sae = load_sae(args.sae)
    with make_encoder(args.encoder, weights_dir=args.weights, backend="torch") as enc:
        if sae is not None:
            _check_sae_matches(sae, enc.info.to_json(), args.sae)
        path = export_onnx(enc, args.output, sae=sae)
    outputs = "embedding, patch_embeddings" + (", sae_codes, sae_patch_preacts" if sae else "")
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB; outputs: {outputs})",
          file=sys.stderr)
    return 0
