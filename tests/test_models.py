"""Networks: torchvision weights from the hub cache, local checkpoints, adaptation, the lightyard command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from omegaconf import OmegaConf

from lightyard.config import check_devices
from lightyard.errors import UserError
from lightyard.models import small_cnn, torchvision_net
from lightyard.models.checkpoints import load_net_weights


def test_pretrained_weights_come_from_torch_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real torchvision path: a weights name resolves to the file torchvision would download."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1
    reference = torchvision.models.mobilenet_v3_small()  # random ImageNet-shaped weights, the real format
    cache = tmp_path / "hub" / "checkpoints" / Path(weights.url).name
    cache.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cache)

    net = torchvision_net(num_classes=4, in_channels=1, name="mobilenet_v3_small", weights="IMAGENET1K_V1")
    first_conv = net.features[0][0]
    assert first_conv.in_channels == 1
    assert torch.allclose(first_conv.weight, reference.features[0][0].weight.sum(dim=1, keepdim=True))
    assert net.classifier[-1].out_features == 4
    assert torch.equal(net.features[3].block[0][0].weight, reference.features[3].block[0][0].weight)


def test_unknown_weights_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError, match="not a weights name of resnet18: use one of IMAGENET1K_V1"):
        torchvision_net(num_classes=3, in_channels=3, name="resnet18", weights="IMAGENET22K")


def test_local_checkpoint_round_trip(tmp_path: Path) -> None:
    source = small_cnn(num_classes=10, in_channels=1)
    lightning_style = {"state_dict": {f"net.{k}": v for k, v in source.state_dict().items()}, "epoch": 3}
    torch.save(lightning_style, tmp_path / "run.ckpt")
    torch.save(source.state_dict(), tmp_path / "bare.pt")
    for name in ("run.ckpt", "bare.pt"):
        net = small_cnn(num_classes=10, in_channels=1, weights=str(tmp_path / name))
        loaded, expected = net.state_dict(), source.state_dict()
        assert all(torch.equal(loaded[key], expected[key]) for key in expected)


def test_checkpoint_of_another_architecture(tmp_path: Path) -> None:
    torch.save(small_cnn(num_classes=10, in_channels=1, width=16).state_dict(), tmp_path / "narrow.pt")
    with pytest.raises(UserError, match="does not fit this network"):
        load_net_weights(small_cnn(num_classes=10, in_channels=1), tmp_path / "narrow.pt")


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "module.pt")  # a pickled nn.Module, not weights
    with pytest.raises(UserError, match="cannot be read safely"):
        load_net_weights(small_cnn(num_classes=10, in_channels=1), tmp_path / "module.pt")


def test_sync_batchnorm_on_cpu_is_refused() -> None:
    with pytest.raises(UserError, match="sync_batchnorm=true needs CUDA"):
        check_devices(OmegaConf.create({"accelerator": "cpu", "devices": 2, "sync_batchnorm": True}))


def test_lightyard_command() -> None:
    bin_dir = Path(sys.executable).parent
    version = subprocess.run([bin_dir / "lightyard", "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("lightyard ")
    nets = subprocess.run([bin_dir / "lightyard", "nets"], capture_output=True, text=True, check=True)
    assert {"resnet18", "mobilenet_v3_small", "efficientnet_b0"} <= set(nets.stdout.split())
