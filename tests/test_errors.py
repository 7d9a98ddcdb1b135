"""Each user mistake gets one line naming the problem and the fix, a non-zero exit, and no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import QUIET, assert_ok, assert_user_error, run_train, save_image

FAST = ["trainer.max_epochs=1", *QUIET]


def test_missing_data_root(tmp_path: Path) -> None:
    result = run_train(["data=imagefolder", f"data.root={tmp_path / 'nope'}", *FAST], cwd=tmp_path)
    assert_user_error(result, "does not exist", "data.root=")


def test_unset_data_root(tmp_path: Path) -> None:
    assert_user_error(run_train(["data=imagefolder", *FAST], cwd=tmp_path), "data.root is not set")


def test_empty_data_root(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run_train(["data=imagefolder", f"data.root={tmp_path / 'empty'}", *FAST], cwd=tmp_path)
    assert_user_error(result, "is empty", "one subfolder of images per class")


def test_class_folder_without_images(tmp_path: Path) -> None:
    save_image(tmp_path / "images" / "cat" / "0.png", "RGB", (8, 8), 10)
    (tmp_path / "images" / "dog").mkdir()
    (tmp_path / "images" / "dog" / "notes.txt").write_text("no images here")
    result = run_train(["data=imagefolder", f"data.root={tmp_path / 'images'}", *FAST], cwd=tmp_path)
    assert_user_error(result, "class folder", "dog", "has no images")


def test_unknown_net(tmp_path: Path) -> None:
    result = run_train(["model/net=torchvision", "model.net.name=resnet19", *FAST], cwd=tmp_path)
    assert_user_error(result, "no classification model named 'resnet19'", "resnet18", "lightyard nets")


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("trainer.max_epoch=3", ["trainer.max_epoch is not a setting", "did you mean trainer.max_epochs?",
                                 "+trainer.max_epoch=3"]),
        ("model.optimzer.lr=0.1", ["model.optimzer.lr is not a setting", "did you mean model.optimizer?"]),
        ("+foo=1 fooo=2", ["fooo is not a setting", "did you mean foo?", "+fooo=2"]),
    ],
)  # fmt: skip
def test_a_mistyped_key_is_one_line(override: str, fragments: list[str], tmp_path: Path) -> None:
    result = run_train([*override.split(), f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, timeout=120)
    assert_user_error(result, *fragments)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_unknown_config_group_option(tmp_path: Path) -> None:
    result = run_train(["data=imagenet21k"], cwd=tmp_path)
    assert_user_error(result, "unknown data option 'imagenet21k'", "digits")


def test_more_gpus_than_present(tmp_path: Path) -> None:
    wanted = torch.cuda.device_count() + 1
    result = run_train(["trainer=gpu", f"trainer.devices={wanted}", *FAST], cwd=tmp_path)
    assert_user_error(result, f"{wanted} GPU(s) requested", "trainer")


def test_checkpoint_with_another_class_count(tmp_path: Path) -> None:
    digits_run = tmp_path / "digits"
    assert_ok(
        run_train(["trainer.max_epochs=1", "test=false", f"hydra.run.dir={digits_run}", *QUIET], cwd=tmp_path)
    )
    ckpt = digits_run / "checkpoints" / "last.ckpt"
    for label, name in enumerate(["a", "b", "c"]):
        for i in range(6):
            save_image(tmp_path / "three" / name / f"{i}.png", "L", (8, 8), 40 * label + i)
    three_classes = [
        "data=imagefolder",
        f"data.root={tmp_path / 'three'}",
        "data.channels=1",
        "data.image_size=8",
    ]
    for how in (f"ckpt_path={ckpt}", f"model.net.weights={ckpt}"):
        result = run_train([*three_classes, how, *FAST], cwd=tmp_path)
        assert_user_error(result, "trained for 10 classes but the data has 3")


def test_missing_checkpoint(tmp_path: Path) -> None:
    result = run_train([f"ckpt_path={tmp_path / 'missing.ckpt'}", *FAST], cwd=tmp_path)
    assert_user_error(result, "does not exist")


def folder_with_a_truncated_png(tmp_path: Path) -> Path:
    """60 good PNGs in two classes and one cut off halfway, as a failed copy leaves it."""
    root = tmp_path / "images"
    for i in range(60):
        save_image(root / ("cat" if i % 2 else "dog") / f"{i}.png", "RGB", (24, 24), 4 * i)
    whole = (root / "dog" / "0.png").read_bytes()
    (root / "dog" / "broken.png").write_bytes(whole[: len(whole) // 2])
    return root


def test_a_truncated_image_stops_the_run_before_any_epoch(tmp_path: Path) -> None:
    root = folder_with_a_truncated_png(tmp_path)
    run = tmp_path / "run"
    result = run_train(["data=imagefolder", f"data.root={root}", f"hydra.run.dir={run}", *FAST], cwd=tmp_path)
    assert_user_error(
        result, "1 unreadable image(s) in", str(root / "dog" / "broken.png"), "skip_bad_images=true"
    )
    assert result.returncode == 2
    assert not (run / "checkpoints").exists() and "Epoch 0" not in result.stdout


def test_bad_images_can_be_left_out_with_one_warning(tmp_path: Path) -> None:
    root = folder_with_a_truncated_png(tmp_path)
    result = run_train(
        ["data=imagefolder", f"data.root={root}", "data.skip_bad_images=true", *FAST], cwd=tmp_path
    )
    assert_ok(result)
    output = result.stdout + result.stderr
    assert output.count("left out 1 unreadable image(s)") == 1, output[-2000:]


def test_every_unreadable_image_of_every_split_is_in_one_report(tmp_path: Path) -> None:
    """train/ and test/ folders with two broken files each: one error names the first three and counts
    all four; with skip_bad_images, one warning counts them and the run goes on."""
    root = tmp_path / "images"
    for split, count in (("train", 40), ("test", 20)):
        for i in range(count):
            save_image(root / split / ("cat" if i % 2 else "dog") / f"{i}.png", "RGB", (24, 24), 4 * i)
        whole = (root / split / "dog" / "0.png").read_bytes()
        for n in range(2):
            (root / split / "cat" / f"broken{n}.png").write_bytes(whole[: len(whole) // 2])
    run = tmp_path / "run"
    result = run_train(["data=imagefolder", f"data.root={root}", f"hydra.run.dir={run}", *FAST], cwd=tmp_path)
    last = assert_user_error(
        result, f"4 unreadable image(s) in {root}:", "and 1 more", "skip_bad_images=true"
    )
    assert last.count("broken") == 3 and result.returncode == 2 and not (run / "checkpoints").exists()

    result = run_train(
        ["data=imagefolder", f"data.root={root}", "data.skip_bad_images=true", *FAST], cwd=tmp_path
    )
    assert_ok(result)
    warnings = [
        line for line in (result.stdout + result.stderr).splitlines() if "unreadable image(s)" in line
    ]
    assert len(warnings) == 1 and "left out 4 unreadable image(s)" in warnings[0], warnings


@pytest.mark.parametrize(
    ("override", "takes"),
    [
        ("trainer.max_epochs=abc", "a whole number ≥ 1"),
        ("trainer.max_epochs=0", "a whole number ≥ 1"),
        ("model.optimizer.lr=abc", "a number > 0"),
        ("model.optimizer.lr=-0.1", "a number > 0"),
        ("data.batch_size=0", "a whole number ≥ 1"),
        ("data.batch_size=12.5", "a whole number ≥ 1"),
        ("trainer.devices=zero", "'auto' or a list of device indices"),
        ("trainer.precision=17", "one of 32-true"),
        ("distill.temperature=0", "a number > 0"),
        ("distill.alpha=1.5", "a number in [0, 1]"),
        ("prune.amount=1.5", "a number in (0, 1)"),
        ("quantize.max_drop=abc", "a number of accuracy points"),
        ("model.label_smoothing=true", "a number in [0, 1)"),
        ("trainer.devices=0", "a whole number ≥ 1, -1 (all)"),
        ("export.atol=0", "a number > 0"),
        ("data=imagefolder data.skip_bad_images=flase", "true or false"),
        ("register.stage=prod", "one of none, staging, production"),
        ("callbacks=[default,early_stopping] callbacks.early_stopping.patience=-1", "a whole number ≥ 0"),
    ],
)
def test_a_mistyped_or_impossible_value_is_one_line(override: str, takes: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = run_train([*override.split(), f"hydra.run.dir={run}"], cwd=tmp_path, timeout=120)
    key, value = override.split()[-1].split("=")
    assert_user_error(result, f"{key}=", value, "is not accepted", takes)
    assert result.returncode == 2 and not (run / "checkpoints").exists()
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # the one line, nothing before it
