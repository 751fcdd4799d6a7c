"""augment/classifier.py: the noise-aware multi-label classifier (shapes, gradients, save/load)."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DModel

from augment.classifier import ClassifierConfig, NoisyLitterClassifier, load_classifier
from augment.train_classifier import pos_weight
from augment.unet import ArchConfig, ScheduleConfig, build_unet
from pipelines.stage import StageError

ARCH = ArchConfig(block_out_channels=(16, 32), attention_resolutions=(8,), attention_head_dim=8,
                  dropout=0.0, norm_num_groups=8)


@pytest.mark.parametrize("pool", ["attention", "adaptive"])
def test_logits_and_features_shapes(pool):
    model = NoisyLitterClassifier(ClassifierConfig(("a", "b", "c"), image_size=16, arch=ARCH, pool=pool))
    x = torch.randn(5, 3, 16, 16)
    t = torch.tensor([0, 1, 10, 500, 999])
    assert model(x, t).shape == (5, 3)
    assert model.features(x, t).shape == (5, 32)
    assert model(x, torch.tensor(7)).shape == (5, 3)  # one timestep broadcast to the batch


def test_gradient_flows_to_the_input_for_guidance():
    model = NoisyLitterClassifier(ClassifierConfig(("a", "b"), image_size=16, arch=ARCH)).eval()
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    log_p = torch.nn.functional.logsigmoid(model(x, torch.tensor([100, 900]))[:, 1]).sum()
    (grad,) = torch.autograd.grad(log_p, x)
    assert grad.shape == x.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert grad[0].abs().sum() > 0 and grad[1].abs().sum() > 0


def test_timestep_changes_the_prediction():
    model = NoisyLitterClassifier(ClassifierConfig(("a", "b"), image_size=16, arch=ARCH)).eval()
    x = torch.randn(1, 3, 16, 16)
    assert not torch.allclose(model(x, torch.tensor([0])), model(x, torch.tensor([999])))


def test_save_and_load_round_trip(tmp_path):
    model = NoisyLitterClassifier(ClassifierConfig(("bottle", "can"), image_size=16, num_train_timesteps=500, arch=ARCH))
    model.save(tmp_path / "clf")
    loaded = load_classifier(tmp_path / "clf")
    assert not loaded.training
    assert loaded.config == model.config and loaded.class_names == ["bottle", "can"]
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 300])
    assert torch.allclose(model.eval()(x, t), loaded(x, t))


def test_load_missing_classifier_is_one_line_error(tmp_path):
    with pytest.raises(StageError, match="missing config.json or model.safetensors"):
        load_classifier(tmp_path)


def test_encoder_starts_from_the_unet_and_the_head_stays_fresh(tmp_path):
    torch.manual_seed(0)
    build_unet(ARCH, ScheduleConfig(), 16).save_pretrained(tmp_path / "unet")
    unet_state = UNet2DModel.from_pretrained(tmp_path / "unet").state_dict()
    model = NoisyLitterClassifier(ClassifierConfig(("a", "b"), image_size=16, arch=ARCH))
    head_before = model.head.weight.clone()
    copied = model.copy_unet_encoder(tmp_path / "unet")
    own = model.state_dict()
    encoder = [k for k in own if not k.startswith(("norm_out.", "pool.", "head."))]
    assert copied == len(encoder) > 20
    assert all(torch.equal(own[k], unet_state[k]) for k in encoder)
    assert torch.equal(model.head.weight, head_before)


def test_encoder_from_a_different_unet_is_refused_with_the_differing_field(tmp_path):
    other = ArchConfig(block_out_channels=(16, 16), attention_resolutions=(8,), attention_head_dim=8,
                       dropout=0.0, norm_num_groups=8)
    build_unet(other, ScheduleConfig(), 16).save_pretrained(tmp_path / "unet")
    model = NoisyLitterClassifier(ClassifierConfig(("a", "b"), image_size=16, arch=ARCH))
    with pytest.raises(StageError, match=r"config.json: cannot start the classifier from this UNet: "
                                         r"block_out_channels is \[16, 16\], the classifier's is \[16, 32\]"):
        model.copy_unet_encoder(tmp_path / "unet")
    with pytest.raises(StageError, match="missing config.json or diffusion_pytorch_model.safetensors"):
        model.copy_unet_encoder(tmp_path / "nowhere")


def test_pos_weight_is_negatives_over_positives():
    targets = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]], dtype=torch.float32)
    # class 0: 3 positives of 4 -> 1/3; class 1: 1 -> 3; class 2: none -> 4 / max(0, 1)
    assert torch.allclose(pos_weight(targets), torch.tensor([1 / 3, 3.0, 4.0]))
