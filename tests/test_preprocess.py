"""The preprocessing spec: every image mode, file round trips, and refusal of bad files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from lightyard.callbacks.prediction_samples import denormalize
from lightyard.data import DigitsDataModule, PreprocessSpec, load_image
from lightyard.data.preprocess import to_mode
from lightyard.errors import UserError
from tests.conftest import save_image

RGB_SPEC = PreprocessSpec(
    height=16, width=16, channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), class_names=("a", "b")
)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I;16"])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_mode_becomes_the_model_input(mode: str, channels: int, tmp_path: Path) -> None:
    path = tmp_path / "image.png"
    save_image(path, mode, (23, 17), 200)
    spec = PreprocessSpec(
        height=8,
        width=8,
        channels=channels,
        mean=(0.5,) * channels,
        std=(0.5,) * channels,
        class_names=("a", "b"),
    )
    x = spec.apply(load_image(path))
    assert x.shape == (channels, 8, 8) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and x.min() >= -1.0 and x.max() <= 1.0


def test_sixteen_bit_grayscale_keeps_its_range(tmp_path: Path) -> None:
    save_image(tmp_path / "deep.png", "I;16", (4, 4), 200)  # stored as 200 * 257
    pixels = RGB_SPEC.to_pixels(load_image(tmp_path / "deep.png"))
    assert int(pixels.max()) == 200


def test_transparent_pixels_are_composited_on_white() -> None:
    image = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    assert int(RGB_SPEC.to_pixels(image).min()) == 255


def test_center_crop_policy() -> None:
    spec = PreprocessSpec(
        height=4, width=4, channels=1, mean=(0.0,), std=(1.0,), class_names=("a", "b"),
        resize_policy="center_crop", resize_size=8,
    )  # fmt: skip
    wide = np.zeros((10, 20), dtype=np.uint8)
    wide[:, 8:12] = 255  # a bright stripe in the middle survives the crop; the sides do not
    pixels = spec.to_pixels(Image.fromarray(wide))
    assert pixels.shape == (4, 4, 1) and pixels.mean() > 60


def test_a_digit_saved_as_png_gives_the_training_tensor(tmp_path: Path) -> None:
    datamodule = DigitsDataModule()
    datamodule.setup()
    image, label = datamodule.samples[datamodule.indices[2][0]]
    path = tmp_path / "digit.png"
    image.save(path)
    test_inputs, test_labels = datamodule.datasets["test"].tensors
    assert torch.equal(datamodule.spec.apply(load_image(path)), test_inputs[0])
    assert int(test_labels[0]) == label


def test_spec_round_trips_through_json(tmp_path: Path) -> None:
    spec = DigitsDataModule().spec
    path = spec.save(tmp_path / "export" / "preprocess.json")
    assert PreprocessSpec.load(path) == spec
    assert not list(path.parent.glob("*.tmp"))


def test_denormalize_inverts_normalize() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    restored = denormalize(torch.from_numpy(RGB_SPEC.normalize(pixels))[None], RGB_SPEC)[0]
    assert torch.allclose(restored * 255, torch.from_numpy(pixels).permute(2, 0, 1).float(), atol=1e-3)


def torchvision_recipe(spec: PreprocessSpec, image: Image.Image) -> torch.Tensor:
    """What torchvision's transforms make of a PIL image: Resize, CenterCrop, PILToTensor, Normalize."""
    image = to_mode(image, spec.channels)
    if spec.resize_policy == "center_crop":
        image = F.center_crop(F.resize(image, spec.resize_size), [spec.height, spec.width])
    else:
        image = F.resize(image, [spec.height, spec.width])
    return F.normalize(F.pil_to_tensor(image).float() / 255.0, list(spec.mean), list(spec.std))


def test_numpy_preprocessing_equals_torchvisions_recipe() -> None:
    """The server's NumPy + Pillow path gives, bit for bit, the input torchvision's transforms would:
    nets trained elsewhere with the torchvision recipe see the pixels they were trained on."""
    rng = np.random.default_rng(0)
    for _ in range(60):
        channels = int(rng.choice([1, 3]))
        height, width = (int(n) for n in rng.integers(5, 300, 2))
        shape = (height, width, 3) if channels == 3 else (height, width)
        image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
        size = (int(n) for n in rng.integers(4, 40, 2))
        crop = bool(rng.integers(2))
        mean, std = tuple(rng.random(channels).round(3)), tuple((rng.random(channels) + 0.1).round(3))
        spec = PreprocessSpec(
            *size, channels, mean, std, ("a", "b"),
            "center_crop" if crop else "exact", int(rng.integers(40, 80)) if crop else None,
        )  # fmt: skip
        assert np.array_equal(spec.to_array(image), torchvision_recipe(spec, image).numpy())


def test_bad_files_are_refused(tmp_path: Path) -> None:
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(png, format="PNG")
    (tmp_path / "truncated.png").write_bytes(png.getvalue()[:60])
    (tmp_path / "text.png").write_text("not an image")
    for name in ("truncated.png", "text.png"):
        with pytest.raises(UserError, match="not a readable image"):
            load_image(tmp_path / name)
    with pytest.raises(UserError, match="image not found"):
        load_image(tmp_path / "missing.png")
    assert load_image(png.getvalue()).size == (64, 64)


def test_inconsistent_spec_is_refused() -> None:
    with pytest.raises(UserError, match="mean and std need 3 values"):
        PreprocessSpec(height=8, width=8, channels=3, mean=(0.5,), std=(0.5,), class_names=("a", "b"))


def test_exif_orientation_is_applied() -> None:
    """A phone photo stored sideways with an EXIF rotation is read upright, as its viewer shows it."""
    image = Image.new("RGB", (20, 10), (255, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    jpeg = io.BytesIO()
    image.save(jpeg, format="JPEG", exif=exif)
    assert load_image(jpeg.getvalue()).size == (10, 20)
