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
from lightyard.data.preprocess import PreprocessSpec
from lightyard.errors import UserError
from lightyard.models import build_net, small_cnn, staged_cnn, torchvision_net
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


def test_staged_cnn_stays_under_10_mmac_on_mnist() -> None:
    from lightyard.compress.measure import count_macs

    net = staged_cnn(num_classes=10, in_channels=1)
    image = torch.zeros(2, 1, 28, 28)
    assert net(image).shape == (2, 10)
    assert count_macs(net, image) <= 10_000_000  # SmallCNN on the same image: 29.5 MMAC
    assert count_macs(net, image) < count_macs(small_cnn(10, 1), image) / 3


@pytest.mark.parametrize(
    ("pool", "hidden", "first_layer_inputs"),
    [(8, [256, 128], 64), (0, [1200, 1200], 784), (0, [], 784)],
)
def test_mlp_input_is_pooled_or_every_pixel(pool, hidden, first_layer_inputs) -> None:
    spec = PreprocessSpec(
        height=28, width=28, channels=1, mean=(0.5,), std=(0.5,), class_names=tuple("0123456789")
    )
    config = {"_target_": "lightyard.models.mlp", "hidden": hidden, "pool": pool, "input_dropout": 0.2}
    net = build_net(config, spec)
    linears = [layer for layer in net.modules() if isinstance(layer, torch.nn.Linear)]
    assert linears[0].in_features == first_layer_inputs
    assert [layer.out_features for layer in linears] == [*hidden, 10]
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert any(isinstance(layer, torch.nn.Dropout) and layer.p == 0.2 for layer in net.modules())


def test_full_image_mlp_rebuilds_from_a_stored_config() -> None:
    """The registry stores no nulls: what the MLP config says must survive without them."""
    from lightyard.models.loading import rebuild_net

    spec = PreprocessSpec(
        height=28, width=28, channels=1, mean=(0.5,), std=(0.5,), class_names=tuple("0123456789")
    )
    config = {
        "_target_": "lightyard.models.mlp",
        "hidden": [32],
        "pool": 0,
        "input_dropout": 0.2,
        "weights": None,
    }
    trained = build_net(config, spec)
    stored = {key: value for key, value in config.items() if value is not None}
    rebuilt = rebuild_net(stored, spec, trained.state_dict(), "a registered version")
    assert torch.equal(rebuilt.eval()(torch.ones(1, 1, 28, 28)), trained.eval()(torch.ones(1, 1, 28, 28)))
