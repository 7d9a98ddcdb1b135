"""A user's folder of images, one subfolder per class, with or without train/ val/ test/ splits."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

from lightyard.data.base import ImageDataModule, Splits
from lightyard.data.datasets import FileImages
from lightyard.data.integrity import unreadable
from lightyard.data.preprocess import IMAGE_EXTENSIONS, PreprocessSpec, ResizePolicy
from lightyard.errors import UserError

log = logging.getLogger("lightyard")
SPLIT_NAMES = ("train", "val", "test")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageFolderDataModule(ImageDataModule):
    """Reads `root/<class>/*.png` (any depth below the class folder) or `root/{train,val,test}/<class>/...`.

    With a `train/` folder, missing `val/` or `test/` folders are split off `train/` by `split_seed`;
    without one, all three splits come from `root`. Images of any size and mode are resized to
    `image_size` and converted to `channels` by the preprocessing spec. Every file is checked at setup:
    unreadable or truncated ones stop the run before any epoch, or are left out with
    `skip_bad_images`.
    """

    def __init__(
        self,
        root: str,
        image_size: int = 64,
        channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        resize_policy: ResizePolicy = "exact",
        resize_size: int | None = None,
        skip_bad_images: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(root).expanduser() if root else None
        self.image_size = image_size
        self.channels = channels
        self.mean = tuple(mean) if mean else (IMAGENET_MEAN if channels == 3 else (0.5,))
        self.std = tuple(std) if std else (IMAGENET_STD if channels == 3 else (0.5,))
        self.resize_policy = resize_policy
        self.resize_size = resize_size
        self.skip_bad_images = skip_bad_images

    @cached_property
    def folders(self) -> dict[str, Path]:
        """The folders present per split name ('all' when the root has no train/ folder)."""
        if self.root is None:
            raise UserError("data.root is not set: pass data.root=/path/to/images (one subfolder per class)")
        if not self.root.is_dir():
            raise UserError(f"data root {self.root} does not exist: pass data.root=/path/to/images")
        if not any(self.root.iterdir()):
            raise UserError(f"data root {self.root} is empty: add one subfolder of images per class")
        if (self.root / "train").is_dir():
            return {name: self.root / name for name in SPLIT_NAMES if (self.root / name).is_dir()}
        return {"all": self.root}

    @cached_property
    def class_names(self) -> tuple[str, ...]:
        base = self.folders.get("train", self.folders.get("all"))
        names = tuple(sorted(_class_folders(base)))
        if len(names) < 2:
            raise UserError(
                f"{base} has {len(names)} class folder(s): an image classifier needs at least 2 "
                "subfolders of images, one per class"
            )
        return names

    def scan(self, folder: Path) -> tuple[FileImages, dict[Path, str]]:
        """The readable images under `folder/<class>/`, labelled by the class folder's position in
        `class_names`, and the unreadable ones with their reasons."""
        paths, labels = [], []
        for label, name in enumerate(self.class_names):
            class_dir = folder / name
            if not class_dir.is_dir():
                continue
            files = sorted(
                p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not files:
                raise UserError(
                    f"class folder {class_dir} has no images ({', '.join(IMAGE_EXTENSIONS)}): "
                    "add images or remove the folder"
                )
            paths += files
            labels += [label] * len(files)
        unknown = sorted(set(_class_folders(folder)) - set(self.class_names))  # val/ or test/ only
        if unknown:
            raise UserError(
                f"{folder} has class folders {unknown} that train/ lacks: every split needs the same classes"
            )
        bad = dict(unreadable(paths, f"images in {folder}"))
        kept = [i for i, path in enumerate(paths) if path not in bad]
        return FileImages([paths[i] for i in kept], [labels[i] for i in kept]), bad

    def check_images(self, bad: dict[Path, str]) -> None:
        """Every unreadable file of the data set in one report: the run stops, or they are left out."""
        if bad and not self.skip_bad_images:
            named = ", ".join(f"{path} ({reason})" for path, reason in list(bad.items())[:3])
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            raise UserError(
                f"{len(bad)} unreadable image(s) in {self.root}: {named}{more}: replace or delete them, or "
                "pass data.skip_bad_images=true to leave them out"
            )
        if bad:
            log.warning(f"left out {len(bad)} unreadable image(s) of {self.root} (data.skip_bad_images=true)")

    @cached_property
    def spec(self) -> PreprocessSpec:
        return PreprocessSpec(
            height=self.image_size,
            width=self.image_size,
            channels=self.channels,
            mean=self.mean,
            std=self.std,
            class_names=self.class_names,
            resize_policy=self.resize_policy,
            resize_size=self.resize_size,
        )

    def load_splits(self) -> Splits:
        """Split folders are used as they are; what is missing is split off the pool by `split_seed`.

        `val_fraction` and `test_fraction` are fractions of the images they are split from.
        """
        scanned = {name: self.scan(folder) for name, folder in self.folders.items()}
        self.check_images({path: reason for _, bad in scanned.values() for path, reason in bad.items()})
        images = {name: found for name, (found, _) in scanned.items()}
        pool = images.get("train", images.get("all"))
        if "val" not in images and "test" not in images:
            train, val, test = self.split_three_ways(pool.labels)
            return Splits(pool, train, pool, val, pool, test)
        train = list(range(len(pool)))
        held_out = {}
        for name, fraction in (("val", self.val_fraction), ("test", self.test_fraction)):
            if name in images:
                source = images[name]
                held_out[name] = (source, list(range(len(source))))
            else:  # the other split has its own folder, so the pool is still whole here
                train, indices = self.split(pool.labels, fraction)
                held_out[name] = (pool, indices)
        return Splits(pool, train, *held_out["val"], *held_out["test"])


def _class_folders(folder: Path) -> list[str]:
    """Subfolder names, skipping hidden ones (.ipynb_checkpoints, .DS_Store folders, ...)."""
    return [p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
