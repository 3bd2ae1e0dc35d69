"""``medsae inspect`` (DESIGN.md §3)."""

import argparse

from medsae_desktop.core.errors import MedsaeError


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
    raise MedsaeError("not implemented yet")
