import pytest
import torch

from nucseg_lib.losses import TopKBCELoss, make_loss, n_classes, soft_dice_loss
from nucseg_lib.model import UNet, build_model, find_imagenet_weights


@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (2, 1, 50, 77), (1, 1, 17, 33)])
def test_unet_any_input_size(shape):
    m = UNet().eval()
    with torch.no_grad():
        y = m(torch.randn(shape))
    assert y.shape == (shape[0], 1, shape[2], shape[3])


def test_unet_structure_follows_the_paper():
    m = UNet(out_channels=3)
    assert m.encoder.stride == 16
    assert m.encoder.out_channels == (64, 64, 128, 256)
    ups = [b.up for b in m.decoder.blocks]
    assert all(isinstance(u, torch.nn.ConvTranspose2d) and u.stride == (2, 2) for u in ups)
    assert [u.out_channels for u in ups] == [128, 64, 32, 16]
    with torch.no_grad():
        p = m.probabilities(m.eval()(torch.randn(1, 1, 32, 32)))
    assert torch.allclose(p.sum(1), torch.ones(1, 32, 32), atol=1e-5)
    with pytest.raises(ValueError):
        m(torch.randn(1, 32, 32))


def test_imagenet_loading_from_a_local_file(tmp_path, monkeypatch):
    from torchvision.models import resnet18

    ref = resnet18(weights=None)
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(ref.state_dict(), path)
    m = build_model(1, "imagenet", weights=path)
    assert torch.allclose(m.encoder.conv1.weight, ref.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(m.encoder.layer3[0].conv1.weight, ref.layer3[0].conv1.weight)
    monkeypatch.setenv("NUCSEG_RESNET18_WEIGHTS", str(path))
    assert find_imagenet_weights() == path


def test_imagenet_missing_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.delenv("NUCSEG_RESNET18_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="resnet18-f37072fd.pth"):
        build_model(1, "imagenet")


def test_transfer_init_copies_the_encoder(tmp_path):
    src = UNet()
    torch.save(src.state_dict(), tmp_path / "weights.pt")
    m = build_model(1, str(tmp_path))
    assert torch.equal(m.encoder.layer2[0].conv1.weight, src.encoder.layer2[0].conv1.weight)
    with pytest.raises(FileNotFoundError):
        build_model(1, str(tmp_path / "nope"))


def test_dice_loss_perfect_is_zero_and_worst_is_near_one():
    y = (torch.rand(2, 16, 16) > 0.5).float()
    assert soft_dice_loss(y, y).item() == 0.0
    assert soft_dice_loss(1 - y, y).item() > 0.95


def test_topk_selects_exactly_k_pixels_and_gradient_is_zero_elsewhere():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 10, 10, requires_grad=True)
    target = (torch.rand(2, 10, 10) > 0.5).float()
    loss = TopKBCELoss(7)(logits, target)
    loss.backward()
    nonzero = (logits.grad != 0).reshape(2, -1).sum(1)
    assert nonzero.tolist() == [7, 7]
    per_pixel = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], target, reduction="none")
    top = per_pixel.reshape(2, -1).topk(7).values
    assert loss.item() == pytest.approx(top.mean().item(), rel=1e-6)
    # K as a fraction of the pixels of a patch: 10% of 256x256 ~ the paper's K = 6000
    assert TopKBCELoss(0.1).n_pixels(256 * 256) == 6554
    with pytest.raises(ValueError):
        TopKBCELoss(0)


def test_make_loss_specs():
    logits = torch.randn(1, 1, 8, 8)
    y = (torch.rand(1, 8, 8) > 0.5).float()
    d, t = make_loss("dice")(logits, y), make_loss("topk:0.2")(logits, y)
    assert make_loss("dice+topk:0.2")(logits, y).item() == pytest.approx((d + t).item(), rel=1e-6)
    assert make_loss("dice+0.5*topk:0.2")(logits, y).item() == pytest.approx((d + 0.5 * t).item(), rel=1e-6)
    assert n_classes("boundary_ce:5") == 3 and n_classes("dice") == 1
    three = make_loss("boundary_ce")(torch.randn(1, 3, 8, 8), torch.randint(0, 3, (1, 8, 8)))
    assert three.item() > 0
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("focal")
