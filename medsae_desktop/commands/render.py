"""``medsae render`` (DESIGN.md §3)."""

import argparse

from medsae_desktop.core.errors import MedsaeError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare this command's arguments."""
    p.add_argument("image", help="DICOM, PNG or JPEG file")
    p.add_argument("-o", "--output", required=True, help="output PNG path")
    p.add_argument("--window", nargs=2, type=float, metavar=("CENTER", "WIDTH"), help="override window")
    p.add_argument("--frame", type=int, default=0, help="frame of a multi-frame image (default 0)")


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    raise MedsaeError("not implemented yet")
