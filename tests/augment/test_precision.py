"""augment.precision: what `mixed_precision: auto` resolves to, and sampling under autocast with fp32 outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from augment import precision
from augment.precision import Precision, cpu_flags, resolve_mixed_precision, sampling_precision

ZEN4 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"
ZEN3 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 fma\n"
SAPPHIRE_RAPIDS = "flags\t\t: fpu avx512f amx_tile amx_bf16 amx_int8\n"


@pytest.fixture
def plain_torch_report(monkeypatch):
    """torch itself sees no bf16 (as it reports on an AMD EPYC with avx512_bf16): only the flags decide."""
    monkeypatch.setattr(precision.torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(precision.torch.cpu, "_is_amx_tile_supported", lambda: False)


@pytest.mark.parametrize("setting", ["no", "bf16", "fp16"])
def test_an_explicit_precision_is_kept(setting):
    assert resolve_mixed_precision(setting, torch.device("cpu")) == Precision(setting, "set in params.yaml")


@pytest.mark.parametrize("cpuinfo, expected", [
    (ZEN4, Precision("bf16", "auto: CPU flag avx512_bf16")),
    (SAPPHIRE_RAPIDS, Precision("bf16", "auto: CPU flag amx_bf16")),
    (ZEN3, Precision("no", "auto: no bf16 instructions on this CPU")),
])
def test_auto_on_a_cpu_reads_the_bf16_flags_torch_does_not_report(plain_torch_report, tmp_path, cpuinfo, expected):
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    assert resolve_mixed_precision("auto", torch.device("cpu"), tmp_path / "cpuinfo") == expected


def test_auto_without_a_cpuinfo_file_is_fp32(plain_torch_report, tmp_path):
    assert cpu_flags(tmp_path / "absent") == set()
    assert resolve_mixed_precision("auto", torch.device("cpu"), tmp_path / "absent").name == "no"


@pytest.mark.parametrize("capability, amx, reason", [("AVX512_BF16", False, "auto: torch CPU capability AVX512_BF16"),
                                                     ("AVX2", True, "auto: AMX tiles")])
def test_auto_takes_what_torch_itself_reports(monkeypatch, tmp_path, capability, amx, reason):
    monkeypatch.setattr(precision.torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(precision.torch.cpu, "_is_amx_tile_supported", lambda: amx)
    (tmp_path / "cpuinfo").write_text(ZEN3)
    assert resolve_mixed_precision("auto", torch.device("cpu"), tmp_path / "cpuinfo") == Precision("bf16", reason)


def test_the_choice_prints_with_its_reason():
    assert str(Precision("bf16", "auto: CPU flag avx512_bf16")) == "bf16 (auto: CPU flag avx512_bf16)"


class Probe(nn.Module):
    """Records the dtype its linear layer computed in."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(8, 4)
        self.seen = None

    def forward(self, x):
        y = self.linear(x)
        self.seen = y.dtype
        return {"logits": y}


def test_sampling_in_bf16_autocasts_the_forward_and_returns_fp32():
    torch.manual_seed(0)
    model, x = Probe(), torch.randn(3, 8)
    reference = model(x)["logits"]
    assert model.seen == torch.float32
    assert sampling_precision(model, "bf16") is model
    with torch.autocast("cpu", enabled=False):  # as the guidance closure calls it
        out = model(x)["logits"]
    assert model.seen == torch.bfloat16 and out.dtype == torch.float32
    torch.testing.assert_close(out, reference, atol=0.05, rtol=0.02)


def test_the_gradient_through_a_bf16_forward_is_fp32():
    model, x = sampling_precision(Probe(), "bf16"), torch.randn(2, 8, requires_grad=True)
    (grad,) = torch.autograd.grad(model(x)["logits"].sum(), x)
    assert grad.dtype == torch.float32 and grad.shape == x.shape


def test_sampling_in_fp32_leaves_the_model_alone():
    model = Probe()
    forward = model.forward
    assert sampling_precision(model, "no").forward == forward
