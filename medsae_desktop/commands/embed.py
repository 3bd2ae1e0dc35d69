"""``medsae embed`` (DESIGN.md §3)."""

import argparse

from medsae_desktop.core.errors import MedsaeError


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


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    raise MedsaeError("not implemented yet")
