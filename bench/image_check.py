"""What checking an image folder before training costs (`data/integrity.py`): a folder of N small PNGs and
JPEGs with a few broken ones, checked in one process and then as training does it (one process per core
once the folder is large). Prints files/s of each and the host.

    python bench/image_check.py [--count 20000] [--size 64] [--cold]

`--cold` (root, Linux) empties the page cache before each pass, so the files come from the disk, as for a
folder just copied in or mounted; without it they are read from memory, as on a second run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from common import host, host_line
from PIL import Image

from lightyard.data import integrity


def make_folder(root: Path, count: int, size: int) -> list[Path]:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (64, size, size, 3), dtype=np.uint8)
    paths = []
    for i in range(count):
        path = root / f"{i % 10}" / f"{i}.{'jpg' if i % 2 else 'png'}"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(pixels[i % 64]).save(path)
        paths.append(path)
    for path in paths[:: max(1, count // 5)]:  # a few cut short, as failed copies leave them
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return paths


def filesystem(path: Path) -> str:
    """The type of the file system `path` is on (Linux: the longest mount point above it)."""
    mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    above = [(point, kind) for point, kind in mounts if path.is_relative_to(point)]
    return max(above, key=lambda mount: len(mount[0]))[1] if above else "unknown"


def drop_page_cache() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--cold", action="store_true", help="empty the page cache before each pass (root)")
    args = parser.parse_args()
    if args.cold and os.geteuid() != 0:
        raise SystemExit("error: --cold empties the page cache, which needs root: run as root or drop --cold")
    prepare = drop_page_cache if args.cold else lambda: None
    print(host_line(host("pillow")), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        if args.cold and filesystem(Path(tmp)) == "tmpfs":
            raise SystemExit(
                f"error: {tmp} is in memory (tmpfs), which --cold cannot empty: set TMPDIR to a disk"
            )
        started = time.perf_counter()
        paths = make_folder(Path(tmp), args.count, args.size)
        print(f"wrote {args.count:,} {args.size}×{args.size} images (half PNG, half JPEG) in "
              f"{time.perf_counter() - started:.1f} s")  # fmt: skip
        prepare()
        started = time.perf_counter()
        serial = integrity._problems(paths)
        one = time.perf_counter() - started
        prepare()
        started = time.perf_counter()
        found = integrity.unreadable(paths)
        parallel = time.perf_counter() - started
    assert len(found) == sum(problem is not None for problem in serial) == 5
    print(f"page cache: {'emptied before each pass' if args.cold else 'warm'}")
    print(f"one process: {args.count / one:,.0f} files/s ({one:.1f} s)")
    rate = args.count / parallel
    print(
        f"as training checks (processes from {integrity.PARALLEL_FROM:,} files): {rate:,.0f} files/s "
        f"({parallel:.1f} s), {len(found)} broken files found; 100,000 files: {100_000 / rate:.0f} s"
    )
    print("the folder was temporary and is removed")


if __name__ == "__main__":
    main()
