"""The preprocessing spec: how an image file becomes the model's input.

The spec is written by every data module, saved as `preprocess.json` next to every export and registered
model, and applied by the server. `load_image` + `PreprocessSpec.to_array` are the only code path from
pixels to input, written with Pillow and NumPy alone so that the server runs without torch; training wraps
the same array as a tensor (`apply`). Training, evaluation, export checks and serving cannot drift apart.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lightyard.errors import UserError
from lightyard.io import write_json_atomic

if TYPE_CHECKING:
    import torch

ResizePolicy = Literal["exact", "center_crop"]
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

# Transparent pixels are composited onto white: icons and scans drawn dark-on-transparent stay legible.
ALPHA_BACKGROUND = 255


@dataclass(frozen=True)
class PreprocessSpec:
    """Everything needed to turn an image into the model's input, and its output into a label.

    `resize_policy="exact"` resizes straight to height×width; `"center_crop"` resizes the shorter side
    to `resize_size` and crops the centre height×width (the torchvision ImageNet recipe). Resizing is
    PIL's bilinear filter, as torchvision's `Resize` does it on PIL images, so a net trained with the
    torchvision recipe sees the same pixels here.
    """

    height: int
    width: int
    channels: Literal[1, 3]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    resize_policy: ResizePolicy = "exact"
    resize_size: int | None = None
    version: int = field(default=1)

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise UserError(f"preprocessing: channels must be 1 or 3, got {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise UserError(
                f"preprocessing: mean and std need {self.channels} values each, "
                f"got {len(self.mean)} and {len(self.std)}"
            )
        if self.resize_policy == "center_crop" and (self.resize_size or 0) < max(self.height, self.width):
            raise UserError("preprocessing: center_crop needs resize_size >= the crop height and width")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_pixels(self, image: Image.Image) -> np.ndarray:
        """Geometry and mode only: uint8 H×W×C pixels at the model's size, not yet normalised."""
        image = to_mode(image, self.channels)
        if self.resize_policy == "center_crop":
            image = _center_crop(_resize_shorter_side(image, self.resize_size), self.height, self.width)
        elif image.size != (self.width, self.height):
            image = image.resize((self.width, self.height), Image.Resampling.BILINEAR)
        pixels = np.asarray(image)
        return pixels[:, :, None] if pixels.ndim == 2 else pixels

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 H×W×C pixels to the float32 C×H×W input the network was trained on: `(pixel / 255 -
        mean) / std`, each step in float32 as torchvision's `ToTensor` + `Normalize` do it (bit-identical)."""
        out = np.empty((pixels.shape[2], *pixels.shape[:2]), dtype=np.float32)
        out[...] = pixels.transpose(2, 0, 1)
        out /= np.float32(255.0)
        out -= np.asarray(self.mean, dtype=np.float32)[:, None, None]
        out /= np.asarray(self.std, dtype=np.float32)[:, None, None]
        return out

    def to_array(self, image: Image.Image) -> np.ndarray:
        """An image (any size and mode) to the model's float32 C×H×W input."""
        return self.normalize(self.to_pixels(image))

    def apply(self, image: Image.Image) -> torch.Tensor:
        """`to_array` as a tensor, for training and evaluation data sets."""
        import torch

        return torch.from_numpy(self.to_array(image))

    def input_from_file(
        self,
        source: str | os.PathLike | bytes,
        max_pixels: int | None = None,
        formats: Sequence[str] | None = None,
        name: str | None = None,
    ) -> np.ndarray:
        """An image file (path or bytes) to the model's input: the one path an image takes for export
        checks, the CLI and the server (which passes its limits, see `load_image`)."""
        return self.to_array(load_image(source, max_pixels, formats, name))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessSpec:
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**fields)

    def save(self, path: str | os.PathLike) -> Path:
        """Write `preprocess.json` atomically (temp file + rename)."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> PreprocessSpec:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """The shorter side to `size`, the longer one scaled and truncated (torchvision's `Resize(int)`)."""
    width, height = image.size
    target = (size, int(size * height / width)) if width <= height else (int(size * width / height), size)
    return image if target == image.size else image.resize(target, Image.Resampling.BILINEAR)


def _center_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    """The centre height×width, offsets rounded as torchvision's `CenterCrop` rounds them."""
    top = round((image.height - height) / 2.0)
    left = round((image.width - width) / 2.0)
    return image.crop((left, top, left + width, top + height))


def to_mode(image: Image.Image, channels: int) -> Image.Image:
    """Any PIL mode (1, L, LA, P, RGB, RGBA, CMYK, I;16, I, F) to L (channels=1) or RGB (channels=3)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = _high_depth_to_l(image)
    if image.mode == "P" or image.mode.endswith("A") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (ALPHA_BACKGROUND,) * 3 + (255,))
        image = Image.alpha_composite(background, rgba)
    target = "L" if channels == 1 else "RGB"
    return image if image.mode == target else image.convert(target)


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """16-bit and float grayscale to 8 bits by their range, where PIL's convert would clip."""
    array = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16"):
        array = array / 257.0
    elif array.size and array.max() > 255:
        array = array * (255.0 / array.max())
    elif image.mode == "F" and array.size and array.max() <= 1.0:
        array = array * 255.0
    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), mode="L")


class ImageTooLarge(UserError):
    """More pixels than allowed: refused before decoding (decompression bombs)."""


class UnsupportedImage(UserError):
    """A readable image in a format that is not accepted."""


def load_image(
    source: str | os.PathLike | bytes,
    max_pixels: int | None = None,
    formats: Sequence[str] | None = None,
    name: str | None = None,
) -> Image.Image:
    """Open an image file (path or bytes), apply its EXIF orientation, and decode it fully.

    `max_pixels` is checked on the header, before any decoding; `formats` (PIL names: PNG, JPEG, …)
    limits what is accepted; `name` is what messages call the image. Raises `UserError` for anything that
    is not a complete, readable image.
    """
    name = name or ("the image" if isinstance(source, bytes) else str(source))
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            if formats is not None and image.format not in formats:
                raise UnsupportedImage(
                    f"{name} is a {image.format} image: send {', '.join(formats[:-1])} or {formats[-1]}"
                )
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLarge(
                    f"{name} has {width}×{height} = {width * height:,} pixels, over the limit of "
                    f"{max_pixels:,}: send a smaller image"
                )
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            return image
    except FileNotFoundError:
        raise UserError(f"image not found: {name}") from None
    except Image.DecompressionBombError as err:
        raise ImageTooLarge(f"{name}: {err}") from None
    except UnidentifiedImageError:
        raise UserError(f"not a readable image: {name} (not in an image format this server reads)") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise UserError(f"not a readable image: {name} ({err})") from None
