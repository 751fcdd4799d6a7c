"""augment/classifier.py: the noise-aware multi-label classifier (shapes, gradients, save/load)."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DModel

from augment.classifier import NoisyLitterClassifier, load_classifier
from augment.train_classifier import pos_weight
from augment.unet import build_unet
from core.errors import StageError
from tests.support import adm_schedule, tiny_arch

ARCH = tiny_arch(attention_head_dim=8)


def classifier(names=("a", "b"), pool: str = "attention", num_train_timesteps: int = 1000) -> NoisyLitterClassifier:
    return NoisyLitterClassifier.from_arch(names, 16, num_train_timesteps, ARCH, pool, where="test")


@pytest.mark.parametrize("pool", ["attention", "adaptive"])
def test_logits_and_features_shapes(pool):
    model = classifier(("a", "b", "c"), pool)
    x = torch.randn(5, 3, 16, 16)
    t = torch.tensor([0, 1, 10, 500, 999])
    assert model(x, t).shape == (5, 3)
    assert model.features(x, t).shape == (5, 32)
    assert model(x, torch.tensor(7)).shape == (5, 3)  # one timestep broadcast to the batch


def test_gradient_flows_to_the_input_for_guidance():
    model = classifier().eval()
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    log_p = torch.nn.functional.logsigmoid(model(x, torch.tensor([100, 900]))[:, 1]).sum()
    (grad,) = torch.autograd.grad(log_p, x)
    assert grad.shape == x.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert grad[0].abs().sum() > 0 and grad[1].abs().sum() > 0


def test_timestep_changes_the_prediction():
    model = classifier().eval()
    x = torch.randn(1, 3, 16, 16)
    assert not torch.allclose(model(x, torch.tensor([0])), model(x, torch.tensor([999])))


def test_save_and_load_round_trip(tmp_path):
    model = classifier(("bottle", "can"), num_train_timesteps=500)
    model.save_pretrained(tmp_path / "clf")
    loaded = load_classifier(tmp_path / "clf")
    assert not loaded.training
    assert {k: v for k, v in loaded.config.items() if k != "_name_or_path"} == dict(model.config)
    assert loaded.class_names == ["bottle", "can"]
    assert loaded.arch == ARCH and loaded.image_size == 16 and loaded.config.num_train_timesteps == 500
    assert sorted(p.name for p in (tmp_path / "clf").iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 300])
    assert torch.allclose(model.eval()(x, t), loaded(x, t))


def test_load_missing_classifier_is_one_line_error(tmp_path):
    with pytest.raises(StageError, match="missing config.json or diffusion_pytorch_model.safetensors"):
        load_classifier(tmp_path)


@pytest.mark.parametrize("damage", ["config", "weights"])
def test_a_broken_saved_classifier_is_one_line_error(tmp_path, damage):
    classifier().save_pretrained(tmp_path / "clf")
    if damage == "config":
        (tmp_path / "clf" / "config.json").write_text("{not json")
    else:
        weights = tmp_path / "clf" / "diffusion_pytorch_model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(StageError, match="clf: unreadable classifier") as err:
        load_classifier(tmp_path / "clf")
    assert "\n" not in str(err.value)


def test_encoder_starts_from_the_unet_and_the_head_stays_fresh(tmp_path):
    torch.manual_seed(0)
    build_unet(ARCH, adm_schedule(), 16).save_pretrained(tmp_path / "unet")
    unet_state = UNet2DModel.from_pretrained(tmp_path / "unet").state_dict()
    model = classifier()
    head_before = model.head.weight.clone()
    copied = model.copy_unet_encoder(tmp_path / "unet")
    own = model.state_dict()
    encoder = [k for k in own if not k.startswith(("norm_out.", "pool.", "head."))]
    assert copied == len(encoder) > 20
    assert all(torch.equal(own[k], unet_state[k]) for k in encoder)
    assert torch.equal(model.head.weight, head_before)


def test_encoder_from_a_different_unet_is_refused_with_the_differing_field(tmp_path):
    other = tiny_arch(block_out_channels=[16, 16], attention_head_dim=8)
    build_unet(other, adm_schedule(), 16).save_pretrained(tmp_path / "unet")
    model = classifier()
    with pytest.raises(StageError, match=r"config.json: cannot start the classifier from this UNet: "
                                         r"block_out_channels is \[16, 16\], the classifier's is \[16, 32\]"):
        model.copy_unet_encoder(tmp_path / "unet")
    with pytest.raises(StageError, match="missing config.json or diffusion_pytorch_model.safetensors"):
        model.copy_unet_encoder(tmp_path / "nowhere")


def test_pos_weight_is_negatives_over_positives():
    targets = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]], dtype=torch.float32)
    # class 0: 3 positives of 4 -> 1/3; class 1: 1 -> 3; class 2: none -> 4 / max(0, 1)
    assert torch.allclose(pos_weight(targets), torch.tensor([1 / 3, 3.0, 4.0]))
