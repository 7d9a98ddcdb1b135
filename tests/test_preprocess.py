"""The preprocessing spec: every image mode, file round trips, and refusal of bad files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightyard.data import DigitsDataModule, PreprocessSpec, load_image
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
    pixels = RGB_SPEC.to_tensor(load_image(tmp_path / "deep.png"))
    assert int(pixels.max()) == 200


def test_transparent_pixels_are_composited_on_white() -> None:
    image = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    assert int(RGB_SPEC.to_tensor(image).min()) == 255


def test_center_crop_policy() -> None:
    spec = PreprocessSpec(
        height=4, width=4, channels=1, mean=(0.0,), std=(1.0,), class_names=("a", "b"),
        resize_policy="center_crop", resize_size=8,
    )  # fmt: skip
    wide = np.zeros((10, 20), dtype=np.uint8)
    wide[:, 8:12] = 255  # a bright stripe in the middle survives the crop; the sides do not
    pixels = spec.to_tensor(Image.fromarray(wide))
    assert pixels.shape == (1, 4, 4) and pixels.float().mean() > 60


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
    pixels = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    restored = RGB_SPEC.denormalize(RGB_SPEC.normalize(pixels))
    assert torch.allclose(restored * 255, pixels.float(), atol=1e-3)


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
