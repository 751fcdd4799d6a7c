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

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, get_down_block
from diffusers.utils import CONFIG_NAME as UNET_CONFIG_NAME
from diffusers.utils import SAFETENSORS_WEIGHTS_NAME as UNET_WEIGHTS_NAME
from safetensors.torch import load_file, save_file
from torch import nn

from augment.unet import ArchConfig, check_arch, down_block_types, unet_arch_mismatch
from pipelines.stage import StageError, from_dict, to_jsonable

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
ENCODER_PREFIXES = ("conv_in.", "time_embedding.", "down_blocks.", "mid_block.")  # named as in UNet2DModel


@dataclass(frozen=True)
class ClassifierConfig:
    """Everything needed to rebuild the classifier; saved as config.json beside the weights."""

    class_names: tuple[str, ...]
    image_size: int
    num_train_timesteps: int = 1000
    arch: ArchConfig = field(default_factory=lambda: ArchConfig(dropout=0.0))
    pool: str = "attention"                  # attention (ADM AttentionPool2d) | adaptive (mean)


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


class NoisyLitterClassifier(nn.Module):
    """Encoder half of the ADM UNet + pooling head -> multi-label logits [B, n_classes]."""

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        arch = config.arch
        check_arch(arch, config.image_size, where="classifier config")
        if config.pool not in ("attention", "adaptive"):
            raise StageError(f"classifier config: pool '{config.pool}' is not attention or adaptive")
        self.config = config
        widths = arch.block_out_channels
        time_dim = widths[0] * 4
        self.conv_in = nn.Conv2d(3, widths[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(widths[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(widths[0], time_dim)
        self.down_blocks = nn.ModuleList()
        in_width = widths[0]
        for i, block_type in enumerate(down_block_types(arch, config.image_size)):
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
        last_size = config.image_size // 2 ** (len(widths) - 1)
        self.pool = (
            AttentionPool2d(widths[-1], last_size**2, arch.attention_head_dim)
            if config.pool == "attention" else nn.AdaptiveAvgPool2d(1)
        )
        self.head = nn.Linear(widths[-1], len(config.class_names))

    @property
    def class_names(self) -> list[str]:
        return list(self.config.class_names)

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
        config_file, weights_file = unet_dir / UNET_CONFIG_NAME, unet_dir / UNET_WEIGHTS_NAME
        if not config_file.is_file() or not weights_file.is_file():
            raise StageError(f"{unet_dir}: missing {UNET_CONFIG_NAME} or {UNET_WEIGHTS_NAME}; run train_unet first")
        mismatch = unet_arch_mismatch(json.loads(config_file.read_text()), self.config.arch, self.config.image_size)
        if mismatch:
            raise StageError(f"{config_file}: cannot start the classifier from this UNet: {mismatch}; "
                             "init_from_unet needs the classifier's model section equal to the UNet's")
        unet_state = load_file(str(weights_file))
        encoder = {k: unet_state[k] for k in self.state_dict() if k.startswith(ENCODER_PREFIXES)}
        self.load_state_dict(encoder, strict=False)
        return len(encoder)

    def save(self, path: Path | str) -> None:
        """Write config.json + model.safetensors into directory `path`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).write_text(json.dumps(to_jsonable(self.config), indent=2) + "\n")
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path / WEIGHTS_NAME))


def load_classifier(path: Path | str, device: str | torch.device = "cpu") -> NoisyLitterClassifier:
    """The classifier saved by `NoisyLitterClassifier.save` in directory `path`, in eval mode."""
    path = Path(path)
    config_file, weights_file = path / CONFIG_NAME, path / WEIGHTS_NAME
    if not config_file.is_file() or not weights_file.is_file():
        raise StageError(f"{path}: missing {CONFIG_NAME} or {WEIGHTS_NAME}; train the classifier first")
    config = from_dict(ClassifierConfig, json.loads(config_file.read_text()), where=str(config_file))
    model = NoisyLitterClassifier(config)
    model.load_state_dict(load_file(str(weights_file)))  # to CPU first: safetensors rejects 'cpu:0'
    return model.to(device).eval()
