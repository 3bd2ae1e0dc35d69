"""``medsae phantoms`` (DESIGN.md §3): synthetic chest radiographs with planted findings."""

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare this command's arguments."""
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("-n", type=int, required=True, help="number of phantoms")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    """Run the command."""
    from tqdm import tqdm

    from medsae_desktop.core.errors import UsageError
    from medsae_desktop.core.phantoms import write_phantoms
    from medsae_desktop.core.progress import run_job

    if args.n < 1:
        raise UsageError(f"-n must be at least 1, got {args.n}")
    if args.seed < 0:
        raise UsageError(f"--seed must be non-negative, got {args.seed}")
    with tqdm(total=args.n, unit="img", desc="phantoms", file=sys.stderr,
              disable=None, leave=False) as bar:
        def on_progress(p):  # type: ignore[no-untyped-def]
            bar.update(p.done - bar.n)

        try:
            res = run_job(write_phantoms(args.output, args.n, seed=args.seed), on_progress)
        except OSError as exc:
            from medsae_desktop.core.errors import MedsaeError

            raise MedsaeError(f"cannot write phantoms ({exc.strerror or exc})",
                              args.output) from exc
    counts = ", ".join(f"{name} {k}" for name, k in res.positives.items())
    print(f"wrote {res.n} phantoms (seed {args.seed}) to {res.out_dir} with "
          f"{res.labels_csv.name} and {res.findings_json.name} in {res.seconds:.1f} s; "
          f"positives: {counts}")
    return 0
