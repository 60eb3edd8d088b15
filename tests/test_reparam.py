"""Every re-parameterisable block fuses exactly into its inference form, borders included."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from esrcli.archs import build, fuse_model, fused_state_dict
from esrcli.archs.blocks import EDBB, Conv3XC, GRep, RepConvAct
from esrcli.reparam import compose, compose_chain, conv_kernel

TOL = 1e-5


def randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial values everywhere (EDBB's edge scales start near zero and would hide bugs).

    Conv weights get a fan-in scaled spread so activations stay O(1), as in a trained net.
    """
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            fan_in = p[0].numel() if p.dim() == 4 else 1
            p.copy_(torch.randn_like(p) / fan_in**0.5 * (1.0 if p.dim() == 4 else 0.3))
    return module


def apply_fused(state: dict[str, torch.Tensor], x: torch.Tensor, prefix: str = "eval_conv") -> torch.Tensor:
    weight = state[f"{prefix}.weight"]
    return F.conv2d(x, weight, state[f"{prefix}.bias"], padding=weight.shape[-1] // 2)


@pytest.mark.parametrize("sizes", [(1, 3), (3, 1), (3, 3), (1, 9), (3, 5, 1), (1, 3, 1)])
def test_compose_equals_the_chain_on_a_once_padded_input(sizes):
    torch.manual_seed(1)
    convs = [nn.Conv2d(4 if i == 0 else 6, 6, k) for i, k in enumerate(sizes)]
    x = torch.randn(2, 4, 13, 11)
    pad = sum(k - 1 for k in sizes) // 2
    expected = nn.Sequential(*convs)(F.pad(x, (pad,) * 4))
    weight, bias = compose_chain([conv_kernel(c) for c in convs])
    assert weight.shape[-1] == 2 * pad + 1
    got = F.conv2d(x, weight.float(), bias.float(), padding=pad)
    assert (got - expected).abs().max() <= TOL


def test_compose_is_not_commutative():
    a, b = nn.Conv2d(3, 5, 1), nn.Conv2d(5, 3, 3)
    w_ab, _ = compose(conv_kernel(a), conv_kernel(b))
    assert w_ab.shape == (3, 3, 3, 3)
    with pytest.raises(RuntimeError):
        compose(conv_kernel(b), conv_kernel(b))  # 3 channels into a 5-channel conv


@pytest.mark.parametrize("c_in,c_out", [(3, 16), (16, 16), (16, 48)])
def test_conv3xc_fuses_exactly(c_in, c_out):
    block = randomise(Conv3XC(c_in, c_out))
    x = torch.rand(2, c_in, 17, 23)
    assert (block(x) - apply_fused(block.fused_state_dict(), x)).abs().max() <= TOL


def test_edbb_seven_branches_fuse_exactly():
    block = randomise(EDBB(12))
    assert len([n for n, _ in block.named_children() if n != "act"]) == 6  # plus the identity
    x = torch.rand(2, 12, 19, 16)
    fused = RepConvAct(12)
    fused.load_state_dict(block.fused_state_dict())
    assert (block(x) - fused(x)).abs().max() <= TOL


def test_edbb_edge_branches_matter():
    """Zeroing a Sobel scale changes the output: the test above would catch a dropped branch."""
    block = randomise(EDBB(6))
    x = torch.rand(1, 6, 9, 9)
    before = block(x)
    with torch.no_grad():
        block.conv1x1_sbx[1].scale.zero_()
    assert (before - block(x)).abs().max() > 1e-3


@pytest.mark.parametrize(
    "kernel,chains,identity",
    [
        (9, ((9,), (1,), (1, 9), (3, 3, 3, 3), (5,)), False),
        (3, ((3,), (1,), (1, 3), (3, 1)), True),
        (5, ((1,), (1, 3)), True),  # every chain smaller than the target
    ],
)
def test_grep_chains_fuse_exactly(kernel, chains, identity):
    block = randomise(GRep(8, 8, kernel, chains, identity=identity))
    x = torch.rand(2, 8, 21, 14)
    state = block.fused_state_dict()
    assert state["eval_conv.weight"].shape[-1] == kernel
    assert (block(x) - apply_fused(state, x)).abs().max() <= TOL


def test_grep_rejects_unmergeable_chains():
    with pytest.raises(ValueError):
        GRep(4, 4, 3, ((3, 3),))  # a 5x5 field does not fit 3x3
    with pytest.raises(ValueError):
        GRep(4, 4, 4, ((2,),))  # even fields have no centre


@pytest.mark.parametrize(
    "arch,config",
    [
        ("span", dict(channels=8, scale=4, norm=True)),
        ("span", dict(channels=8, scale=2, cat_channels=6, norm=False)),
        ("espan", dict(channels=8, scale=4, n_blocks=2)),
        ("spanf", dict(channels=8, scale=3, n_blocks=2)),
        ("efdn", dict(channels=8, scale=2)),
    ],
)
def test_whole_networks_fuse_to_the_same_output(arch, config):
    """In float64: random deep nets amplify fp32 rounding by ~1e5, which would hide a real mismatch."""
    train = randomise(build(arch, form="train", **config)).double().eval()
    fused = fuse_model(train)
    assert fused.form == "fused" and next(fused.parameters()).dtype == torch.float64
    assert set(fused.state_dict()) == set(fused_state_dict(train))
    x = torch.rand(1, 3, 24, 20, dtype=torch.float64)
    with torch.no_grad():
        a, b = train(x), fused(x)
    assert a.shape == (1, 3, 24 * config["scale"], 20 * config["scale"])
    assert (a - b).abs().max() <= 1e-9 * max(1.0, a.abs().max().item())
