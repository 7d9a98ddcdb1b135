"""Each data config runs train → val → test on small data written in the source's real on-disk format."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightyard.data import CIFAR10DataModule, ImageFolderDataModule, MNISTDataModule, integrity
from lightyard.data.integrity import image_problem, unreadable
from lightyard.errors import UserError
from lightyard.training import train
from tests.conftest import QUIET, compose_train, save_image


def fast_dev_run(tmp_path: Path, *overrides: str) -> dict[str, float]:
    cfg = compose_train(["debug=fdr", *QUIET, *overrides], tmp_path / "run")
    return train(cfg)


def test_digits(tmp_path: Path) -> None:
    """With the default callbacks: the rich progress bar and model summary really run."""
    metrics = train(compose_train(["debug=fdr"], tmp_path / "run"))
    assert {"train/loss", "val/acc", "test/acc", "test/acc_top5"} <= set(metrics)


def test_cifar10_python_batches(cifar_root: Path, tmp_path: Path) -> None:
    datamodule = CIFAR10DataModule(root=str(cifar_root), download=False, val_fraction=0.1)
    datamodule.setup()
    assert [len(datamodule.datasets[s]) for s in ("train", "val", "test")] == [90, 10, 20]
    assert (datamodule.spec.channels, datamodule.spec.height, datamodule.spec.width) == (3, 32, 32)
    metrics = fast_dev_run(tmp_path, "data=cifar10", f"data.root={cifar_root}", "data.download=false",
                           "data.num_workers=0", "data.batch_size=8",
                           "model/net=mobilenet_v3_small")  # fmt: skip
    assert "test/acc" in metrics


def test_cifar10_batches_are_not_unpickled_blindly(cifar_root: Path) -> None:
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    import pickle

    (cifar_root / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps({"data": Exploit()}))
    with pytest.raises(UserError, match="not a CIFAR-10 batch file"):
        CIFAR10DataModule(root=str(cifar_root), download=False).setup()


@pytest.mark.parametrize(
    ("config", "root_fixture"), [("mnist", "mnist_root"), ("fashion_mnist", "fashion_root")]
)
def test_mnist_idx_files(
    config: str, root_fixture: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    root = request.getfixturevalue(root_fixture)
    metrics = fast_dev_run(tmp_path, f"data={config}", f"data.root={root}", "data.download=false",
                           "data.num_workers=0", "data.batch_size=8")  # fmt: skip
    assert "test/acc" in metrics


def test_missing_torchvision_data_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"MNIST not found: .*train-images-idx3-ubyte is missing"):
        MNISTDataModule(root=str(tmp_path), download=False).setup()


def test_imagefolder_without_splits_mixed_modes(image_folder: Path, tmp_path: Path) -> None:
    metrics = fast_dev_run(tmp_path, "data=imagefolder", f"data.root={image_folder}", "data.num_workers=0",
                           "data.image_size=16", "data.batch_size=4", "model/net=resnet18")  # fmt: skip
    assert "test/acc" in metrics
    datamodule = ImageFolderDataModule(root=str(image_folder), image_size=16)
    datamodule.setup()
    assert datamodule.spec.class_names == ("cat", "dog", "fox")
    assert sum(len(d) for d in datamodule.datasets.values()) == 30


def test_imagefolder_with_split_folders(tmp_path: Path) -> None:
    root = tmp_path / "images"
    for split, count in (("train", 8), ("val", 2), ("test", 3)):
        for label, name in enumerate(["a", "b"]):
            for i in range(count):
                save_image(root / split / name / "nested" / f"{i}.jpg", "RGB", (12, 12), 60 + 100 * label)
    datamodule = ImageFolderDataModule(root=str(root), image_size=8, channels=1)
    datamodule.setup()
    assert [len(datamodule.datasets[s]) for s in ("train", "val", "test")] == [16, 4, 6]
    x, _ = datamodule.datasets["val"][0]
    assert x.shape == (1, 8, 8)


def test_imagefolder_with_train_only_splits_val_and_test_off(tmp_path: Path) -> None:
    for label, name in enumerate(["a", "b"]):
        for i in range(20):
            save_image(tmp_path / "images" / "train" / name / f"{i}.png", "L", (8, 8), 50 * label)
    datamodule = ImageFolderDataModule(root=str(tmp_path / "images"), val_fraction=0.1, test_fraction=0.2)
    datamodule.setup()
    assert [len(datamodule.datasets[s]) for s in ("train", "val", "test")] == [28, 4, 8]


def test_hidden_folders_are_not_classes(image_folder: Path) -> None:
    (image_folder / ".ipynb_checkpoints").mkdir()
    (image_folder / ".ipynb_checkpoints" / "x.png").write_bytes(b"")
    datamodule = ImageFolderDataModule(root=str(image_folder))
    datamodule.setup()
    assert datamodule.spec.class_names == ("cat", "dog", "fox")


def test_split_is_seeded(image_folder: Path) -> None:
    def test_files(seed: int) -> list[Path]:
        datamodule = ImageFolderDataModule(root=str(image_folder), split_seed=seed)
        datamodule.setup()
        dataset = datamodule.datasets["test"]
        return [dataset.source.paths[i] for i in dataset.indices]

    assert test_files(1) == test_files(1)
    assert test_files(1) != test_files(2)


def test_train_size_is_one_seeded_subset_of_the_train_split() -> None:
    """The same images every run (so that sweeps' trials compare), drawn from train only."""
    from lightyard.data import DigitsDataModule

    def indices(**settings) -> list[int]:
        datamodule = DigitsDataModule(**settings)
        return datamodule.training_indices(datamodule.load_splits())

    whole, subset = DigitsDataModule().load_splits().train, indices(train_size=100)
    assert len(subset) == 100 and set(subset) < set(whole)
    assert indices(train_size=100) == subset
    assert indices(train_size=100, split_seed=7) != subset
    datamodule = DigitsDataModule(train_size=100)
    datamodule.setup()
    assert len(datamodule.datasets["train"]) == 100 and len(datamodule.datasets["val"]) == 270
    with pytest.raises(UserError, match=f"more than the {len(whole)} training images"):
        indices(train_size=5000)
    with pytest.raises(UserError, match=r"data\.train_size must be at least 1"):
        DigitsDataModule(train_size=0)


def test_global_batch_is_split_across_ranks() -> None:
    from lightyard.data import DigitsDataModule

    class FakeTrainer:  # only world_size is read; the real DDP split is checked in test_distributed.py
        world_size = 4

    datamodule = DigitsDataModule(batch_size=64)
    datamodule.trainer = FakeTrainer()
    assert datamodule.per_device_batch_size == 16
    datamodule.batch_size = 30
    with pytest.raises(UserError, match="does not split evenly over 4 processes"):
        _ = datamodule.per_device_batch_size


def test_mnist_experiment_on_idx_files(mnist_root: Path, tmp_path: Path) -> None:
    """experiment=mnist as shipped (staged CNN, shifts and rotations), on generated idx files."""
    metrics = fast_dev_run(tmp_path, "experiment=mnist", f"data.root={mnist_root}", "data.download=false",
                           "data.num_workers=0")  # fmt: skip
    assert "test/acc" in metrics


def test_image_check_finds_truncated_and_foreign_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    good_png, good_jpeg = tmp_path / "good.png", tmp_path / "good.jpg"
    Image.new("RGB", (32, 32), (10, 200, 30)).save(good_png)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(good_jpeg)
    cut_png, cut_jpeg, text = tmp_path / "cut.png", tmp_path / "cut.jpg", tmp_path / "notes.png"
    cut_png.write_bytes(good_png.read_bytes()[:-30])
    cut_jpeg.write_bytes(good_jpeg.read_bytes()[:-200])
    text.write_text("not an image")
    assert image_problem(good_png) is None and image_problem(good_jpeg) is None
    assert "not in an image format" in image_problem(text)
    assert image_problem(cut_png) and image_problem(cut_jpeg)
    paths = [good_png, cut_png, good_jpeg, cut_jpeg, text] * 20
    serial = unreadable(paths)
    monkeypatch.setattr(integrity, "PARALLEL_FROM", 10)  # the process pool, on a small folder
    monkeypatch.setattr(integrity, "CHUNK", 7)
    monkeypatch.setattr(integrity.os, "sched_getaffinity", lambda _: {0, 1})  # a pool even on one CPU
    logging.getLogger("lightyard").addHandler(caplog.handler)  # Hydra's logging config may stop propagation
    try:
        with caplog.at_level(logging.INFO, logger="lightyard"):
            assert unreadable(paths) == serial
    finally:
        logging.getLogger("lightyard").removeHandler(caplog.handler)
    progress = [
        record.getMessage() for record in caplog.records if record.getMessage().startswith("checked ")
    ]
    assert progress and progress[-1] == "checked 100 of 100 images", progress  # the pool reports progress
    assert [path for path, _ in serial] == [cut_png, cut_jpeg, text] * 20
