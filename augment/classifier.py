"""The noise-aware multi-label litter classifier p(y | x_t, t) of classifier guidance.

Dhariwal & Nichol 2021, section 4 / openai/guided-diffusion `EncoderUNetModel`: the UNet's
encoder half (down blocks + mid block, conditioned on the timestep embedding) followed by a
pooling head. Here the head is multi-label (one sigmoid per litter class; a clean road has no
label), so log p(y | x_t) for guidance toward class c is `logsigmoid(logits[:, c])`.

    x        x_t, images in [-1, 1], [B, 3, H, W]
    timesteps t in [0, num_train_timesteps), [B]; the judge always uses t = 0
    features the pooled penultimate features, [B, D] (D = block_out_channels[-1])
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, get_down_block
from diffusers.utils import CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from augment.unet import ArchConfig, check_arch, down_block_types, unet_arch_mismatch
from core.errors import StageError

ENCODER_PREFIXES = ("conv_in.", "time_embedding.", "down_blocks.", "mid_block.")  # named as in UNet2DModel
POOLS = ("attention", "adaptive")


class AttentionPool2d(nn.Module):
    """ADM's attention pooling: the mean token attends over all positions (+ learned positions)."""

    def __init__(self, channels: int, n_positions: int, head_dim: int):
        super().__init__()
        self.positions = nn.Parameter(torch.randn(n_positions + 1, channels) / channels**0.5)
        self.attention = nn.MultiheadAttention(channels, channels // head_dim, batch_first=True)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        tokens = h.flatten(2).transpose(1, 2)  # [B, HW, C]
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1) + self.positions
        pooled, _ = self.attention(tokens[:, :1], tokens, tokens, need_weights=False)
        return pooled[:, 0]  # [B, C]


class NoisyLitterClassifier(ModelMixin, ConfigMixin):
    """Encoder half of the ADM UNet + pooling head -> multi-label logits [B, n_classes].

    A diffusers model: its constructor arguments are its config, so `save_pretrained` writes
    config.json + diffusion_pytorch_model.safetensors and `from_pretrained` rebuilds it.
    The arch arguments are the fields of `augment.unet.ArchConfig` (`from_arch`); `pooling` is the
    params' `pool` (a config key may not share a submodule's name).
    """

    @register_to_config
    def __init__(self, class_names: Sequence[str], image_size: int, num_train_timesteps: int,
                 block_out_channels: Sequence[int], layers_per_block: int, attention_resolutions: Sequence[int],
                 attention_head_dim: int, dropout: float, norm_num_groups: int, resnet_time_scale_shift: str,
                 resblock_updown: bool, pooling: str):
        super().__init__()
        arch = ArchConfig(tuple(block_out_channels), layers_per_block, tuple(attention_resolutions), attention_head_dim,
                          dropout, norm_num_groups, resnet_time_scale_shift, resblock_updown)
        if pooling not in POOLS:
            raise StageError(f"classifier config: pooling '{pooling}' is not one of {', '.join(POOLS)}")
        widths = arch.block_out_channels
        time_dim = widths[0] * 4
        self.conv_in = nn.Conv2d(3, widths[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(widths[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(widths[0], time_dim)
        self.down_blocks = nn.ModuleList()
        in_width = widths[0]
        for i, block_type in enumerate(down_block_types(arch, image_size)):
            self.down_blocks.append(get_down_block(
                block_type, num_layers=arch.layers_per_block, in_channels=in_width,
                out_channels=widths[i], temb_channels=time_dim, add_downsample=i < len(widths) - 1,
                resnet_eps=1e-5, resnet_act_fn="silu", resnet_groups=arch.norm_num_groups,
                attention_head_dim=arch.attention_head_dim, downsample_padding=1,
                resnet_time_scale_shift=arch.resnet_time_scale_shift,
                downsample_type="resnet" if arch.resblock_updown else "conv", dropout=arch.dropout,
            ))
            in_width = widths[i]
        self.mid_block = UNetMidBlock2D(
            in_channels=widths[-1], temb_channels=time_dim, dropout=arch.dropout, resnet_eps=1e-5,
            resnet_act_fn="silu", resnet_time_scale_shift=arch.resnet_time_scale_shift,
            attention_head_dim=arch.attention_head_dim, resnet_groups=arch.norm_num_groups,
            attn_groups=arch.norm_num_groups,
        )
        self.norm_out = nn.GroupNorm(arch.norm_num_groups, widths[-1], eps=1e-5)
        last_size = image_size // 2 ** (len(widths) - 1)
        self.pool = (
            AttentionPool2d(widths[-1], last_size**2, arch.attention_head_dim)
            if pooling == "attention" else nn.AdaptiveAvgPool2d(1)
        )
        self.head = nn.Linear(widths[-1], len(class_names))

    @classmethod
    def from_arch(cls, class_names: Sequence[str], image_size: int, num_train_timesteps: int, arch: ArchConfig,
                  pool: str, where: str) -> NoisyLitterClassifier:
        """A fresh classifier of shape `arch`; `where` names the settings in the error of a bad image size."""
        check_arch(arch, image_size, where)
        fields = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(arch).items()}
        return cls(class_names=list(class_names), image_size=image_size, num_train_timesteps=num_train_timesteps,
                   pooling=pool, **fields)

    @property
    def arch(self) -> ArchConfig:
        return ArchConfig(**{f.name: tuple(v) if isinstance(v := self.config[f.name], list) else v
                             for f in dataclasses.fields(ArchConfig)})

    @property
    def class_names(self) -> list[str]:
        return list(self.config.class_names)

    @property
    def image_size(self) -> int:
        return int(self.config.image_size)

    def features(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features [B, D] of x_t [B, 3, H, W] at timesteps t [B]."""
        timesteps = torch.as_tensor(timesteps, device=x.device).reshape(-1).expand(x.shape[0])
        emb = self.time_embedding(self.time_proj(timesteps).to(x.dtype))
        h = self.conv_in(x)
        for block in self.down_blocks:
            h, _ = block(hidden_states=h, temb=emb)
        h = self.mid_block(h, emb)
        h = nn.functional.silu(self.norm_out(h))
        return self.pool(h).flatten(1)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Multi-label logits [B, n_classes]; p(class c present | x_t) = sigmoid(logits[:, c])."""
        return self.head(self.features(x, timesteps))

    def copy_unet_encoder(self, unet_dir: Path | str) -> int:
        """Start the encoder (all but norm_out, pool, head) from a trained UNet2DModel's weights.

        The classifier's arch must equal the UNet's, so every encoder tensor has the same name and
        meaning in both. Returns the number of tensors copied.
        """
        unet_dir = Path(unet_dir)
        config_file, weights_file = unet_dir / CONFIG_NAME, unet_dir / SAFETENSORS_WEIGHTS_NAME
        if not config_file.is_file() or not weights_file.is_file():
            raise StageError(f"{unet_dir}: missing {CONFIG_NAME} or {SAFETENSORS_WEIGHTS_NAME}; run train_unet first")
        try:
            unet_config, unet_state = json.loads(config_file.read_text()), load_file(str(weights_file))
        except (OSError, ValueError, SafetensorError) as err:
            raise StageError(f"{unet_dir}: unreadable UNet ({type(err).__name__}: {err}); rerun the train_unet "
                             "stage".replace("\n", " ")) from None
        mismatch = unet_arch_mismatch(unet_config, self.arch, self.image_size)
        if mismatch:
            raise StageError(f"{config_file}: cannot start the classifier from this UNet: {mismatch}; "
                             "init_from_unet needs the classifier's model section equal to the UNet's")
        encoder = {k: unet_state[k] for k in self.state_dict() if k.startswith(ENCODER_PREFIXES)}
        self.load_state_dict(encoder, strict=False)
        return len(encoder)


def load_classifier(path: Path | str, device: str | torch.device = "cpu") -> NoisyLitterClassifier:
    """The classifier `save_pretrained` wrote into directory `path`, in eval mode."""
    path = Path(path)
    config_file, weights_file = path / CONFIG_NAME, path / SAFETENSORS_WEIGHTS_NAME
    if not config_file.is_file() or not weights_file.is_file():
        raise StageError(f"{path}: missing {CONFIG_NAME} or {SAFETENSORS_WEIGHTS_NAME}; train the classifier first")
    try:
        model = NoisyLitterClassifier.from_pretrained(path)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError, SafetensorError) as err:
        raise StageError(f"{path}: unreadable classifier ({type(err).__name__}: {err})".replace("\n", " ")) from None
    return model.to(device).eval()
