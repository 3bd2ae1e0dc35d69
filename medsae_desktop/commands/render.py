"""``medsae render`` (DESIGN.md §3): an image through the display pipeline to an 8-bit PNG.

The PNG is the full-resolution default render (or the given window), in MONOCHROME2
orientation: exactly what the encoders see. It is written atomically, so a failed run never
leaves a partial or empty output file.
"""

import argparse
import math
import os
import sys

from medsae_desktop.core.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare this command's arguments."""
    p.add_argument("image", help="DICOM, PNG or JPEG file")
    p.add_argument("-o", "--output", required=True, help="output PNG path")
    p.add_argument("--window", nargs=2, type=float, metavar=("CENTER", "WIDTH"), help="override window")
    p.add_argument("--frame", type=int, default=0, help="frame of a multi-frame image (default 0)")


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    from medsae_desktop.core.images import Window, apply_window, read_image, save_png

    if args.frame < 0:
        raise UsageError(f"--frame must be 0 or more, got {args.frame}")
    window = None
    if args.window is not None:
        center, width = args.window
        if not (math.isfinite(center) and math.isfinite(width) and width > 0):
            raise UsageError(
                f"--window needs a finite CENTER and a WIDTH > 0, got {center:g} {width:g}"
            )
        window = Window(center, width, "command line")
    if _same_file(args.image, args.output):
        raise UsageError(f"{args.output}: the output would overwrite the input image")

    image = read_image(args.image, frame=args.frame)
    render_hw = image.render_hw if window is None else apply_window(image, window)
    save_png(render_hw, args.output)

    for message in image.warnings:
        print(f"medsae render: warning: {args.image}: {message}", file=sys.stderr)
    if window is None and image.voi_lut is not None:
        how = "VOI LUT" + (f" ({image.voi_lut.explanation})" if image.voi_lut.explanation else "")
    else:
        used = window or image.default_window
        how = f"window {used.center:g}/{used.width:g}" + (
            f" ({used.explanation})" if used.explanation else "")
    rows, columns = render_hw.shape
    frame_note = f", frame {image.frame} of {image.n_frames}" if image.n_frames > 1 else ""
    print(f"wrote {args.output}: {columns} x {rows} pixels, {how}{frame_note}")
    return 0


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)
