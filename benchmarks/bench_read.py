"""Benchmark the image display pipeline on the real chest radiograph RG1 (1955 x 1841, 15-bit).

Times, per file, over several runs (median and min, in milliseconds):

- ``decode``: read the DICOM file and decode frame 0 to a numpy array, with the same decoding
  plugin the pipeline uses (``pydicom.dcmread`` + ``pydicom.pixels.pixel_array``);
- ``read_image``: the whole :func:`medsae_desktop.core.images.read_image` (decode, Modality
  LUT, window, MONOCHROME1 inversion, header summary) — what opening a study costs;
- ``render``: :func:`~medsae_desktop.core.images.apply_window` with the default window — the
  display pipeline alone on the decoded float image, i.e. one window/level update in the viewer;
- ``save_png``: writing the 8-bit render atomically (what ``medsae render`` adds).

Prints a table and, unless ``--no-record``, appends it with the machine (CPU model, cores,
load average), date and command to ``benchmarks/RESULTS.md`` under "## Image reading
(bench_read.py)". Usage::

    python benchmarks/bench_read.py [--runs 7] [--no-record]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _machine import cpu_model  # sibling module in benchmarks/

SECTION = "## Image reading (bench_read.py)"
RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
FILES = (("RG1_UNCR.dcm", "uncompressed"), ("RG1_J2KR.dcm", "JPEG 2000 lossless"))


def time_ms(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median and min wall time of ``fn()`` in milliseconds, after one warm-up call."""
    fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(samples), min(samples)


def plugin_versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for dist in ("pylibjpeg-openjpeg", "pylibjpeg-rle", "python-gdcm", "pillow"):
        try:
            found.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            found.append(f"{dist} absent")
    return ", ".join(found)


def decode_only(path: str) -> Callable[[], object]:
    """dcmread + frame decode with the plugin order the pipeline prefers."""
    from pydicom import dcmread

    from medsae_desktop.core import images

    def run() -> object:
        ds = dcmread(path)
        return images._decode_frame(ds, ds.file_meta.TransferSyntaxUID, 0)

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per measurement")
    parser.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    parser.add_argument("--results", type=Path, default=RESULTS_PATH, help="results file")
    args = parser.parse_args(argv)

    import numpy as np
    import pydicom
    from pydicom.data import get_testdata_file

    from medsae_desktop.core.images import apply_window, read_image, save_png

    load_before = os.getloadavg()
    rows: list[tuple[str, str, list[tuple[float, float]]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, what in FILES:
            path = get_testdata_file(name)
            if path is None:
                print(f"{name} not found: install pydicom-data", file=sys.stderr)
                return 1
            image = read_image(path)
            out_png = Path(tmp) / "out.png"
            rows.append((name, what, [
                time_ms(decode_only(path), args.runs),
                time_ms(lambda: read_image(path), args.runs),
                time_ms(lambda: apply_window(image), args.runs),
                time_ms(lambda: save_png(image.render_hw, out_png), args.runs),
            ]))
            assert np.array_equal(apply_window(image), image.render_hw)
    load_after = os.getloadavg()

    header = ("| file | pixel data | decode ms (median / min) | read_image ms | render ms "
              "| save_png ms |")
    lines = [header, "|---|---|---|---|---|---|"]
    for name, what, timings in rows:
        cells = " | ".join(f"{median:.0f} / {low:.0f}" for median, low in timings)
        lines.append(f"| {name} | {what} | {cells} |")
    table = "\n".join(lines)
    print(table)

    n_logical = os.cpu_count()
    try:
        n_usable = len(os.sched_getaffinity(0))
    except AttributeError:
        n_usable = n_logical
    machine = (f"{cpu_model()}, {n_logical} logical cores ({n_usable} usable), "
               f"{platform.system()} {platform.release()}")
    load = (f"{load_before[0]:.2f} / {load_before[1]:.2f} / {load_before[2]:.2f} before, "
            f"{load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f} after")
    versions = (f"Python {platform.python_version()}, numpy {np.__version__}, "
                f"pydicom {pydicom.__version__}, {plugin_versions()}")
    command = "python " + " ".join(shlex.quote(a) for a in [
        os.path.relpath(__file__), *(sys.argv[1:] if argv is None else argv)])
    print(f"\nmachine: {machine}\nload average (1/5/15 min): {load}\n{versions}")

    if not args.no_record:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        entry = (
            f"### {stamp}\n\n"
            f"- command: `{command}` ({args.runs} timed runs after one warm-up; median / min)\n"
            f"- machine: {machine}\n"
            f"- load average (1/5/15 min): {load}\n"
            f"- software: {versions}\n\n"
            f"{table}\n"
        )
        record(args.results, entry)
        print(f"\nappended to {args.results}")
    return 0


def record(results: Path, entry: str) -> None:
    """Append ``entry`` at the end of our section, creating it (or the file) if needed.

    Other benchmarks own other sections of the same file, so only our section is touched.
    """
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    if SECTION not in text:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\n{entry}"
    else:
        start = text.index(SECTION) + len(SECTION)
        next_section = text.find("\n## ", start)
        end = len(text) if next_section < 0 else next_section + 1
        body = text[start:end].rstrip("\n")
        text = text[:start] + body + "\n\n" + entry + ("\n" + text[end:] if end < len(text)
                                                       else "")
    tmp = results.with_name(results.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, results)


if __name__ == "__main__":
    raise SystemExit(main())
