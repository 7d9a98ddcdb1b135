"""Unreadable images found before training, not by a DataLoader worker an hour into it.

Every file of an image folder is checked when the data module sets up: opened, and its structure walked
without decoding the pixels (PIL's `verify`: a PNG's chunks and their checksums up to the end marker), and
a JPEG must end with its end-of-image marker (PIL's `verify` reads only a JPEG's header). Large folders
are checked by one process per core, with progress in the log.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import struct
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image, UnidentifiedImageError

log = logging.getLogger("lightyard")
PARALLEL_FROM = 4000  # files; below this, starting processes costs more than it saves
CHUNK = 500
JPEG_END = b"\xff\xd9"


def image_problem(path: Path) -> str | None:
    """Why `path` is not a complete image, or None when it is."""
    try:
        with Image.open(path) as image:
            fmt = image.format
            image.verify()
    except UnidentifiedImageError:
        return "not in an image format PIL reads"
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as err:
        return str(err).strip() or type(err).__name__
    if fmt == "JPEG" and JPEG_END not in _tail(path):
        return "truncated: no JPEG end marker"
    return None


def _tail(path: Path, size: int = 1024) -> bytes:
    """The last bytes of a file: some JPEGs carry a little data after their end marker."""
    with open(path, "rb") as file:
        file.seek(0, 2)
        file.seek(max(0, file.tell() - size))
        return file.read()


def _problems(paths: Sequence[Path]) -> list[str | None]:
    return [image_problem(path) for path in paths]


def unreadable(paths: Sequence[Path], what: str = "images") -> list[tuple[Path, str]]:
    """(path, reason) of every file in `paths` that is not a complete image, in their order."""
    chunks = [paths[start : start + CHUNK] for start in range(0, len(paths), CHUNK)]
    workers = min(len(os.sched_getaffinity(0)), len(chunks))
    if len(paths) < PARALLEL_FROM or workers < 2:
        found = _problems(paths)
    else:
        log.info(f"checking {len(paths):,} {what} with {workers} processes")
        found = []
        # fork: the workers need only PIL and the paths, not a re-import of the training script
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            for done, problems in enumerate(pool.map(_problems, chunks), start=1):
                found += problems
                if done % max(1, len(chunks) // 10) == 0 or done == len(chunks):
                    log.info(f"checked {min(done * CHUNK, len(paths)):,} of {len(paths):,} {what}")
    return [(path, problem) for path, problem in zip(paths, found, strict=True) if problem]
