"""``medsae export-onnx`` (DESIGN.md §3)."""

import argparse

from medsae_desktop.core.errors import MedsaeError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare this command's arguments."""
    p.add_argument("--encoder", required=True, choices=["medclip-resnet", "medclip-swin", "demo"])
    p.add_argument("--weights", help="encoder weights folder")
    p.add_argument("--sae", help="SAE checkpoint folder")
    p.add_argument("-o", "--output", required=True, help="MODEL.onnx")


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    raise MedsaeError("not implemented yet")
