"""The comparison token mixers (recconv.models.mixers) and the Haar ops behind the wavelet one."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import recconv
from recconv._util import count_flops
from recconv.models import RecNeXt
from recconv.models.mixers import DenseMixer, DilatedMixer, DilatedStack, GlobalConv, LargeKernelConv
from recconv.models.recnext import TOKEN_MIXERS
from recconv.ops import HaarDown, HaarUp

SHAPES = {1: (2, 1, 67), 2: (2, 1, 19, 23), 3: (2, 1, 5, 11, 9)}


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
@pytest.mark.parametrize("mixer", sorted(TOKEN_MIXERS))
def test_every_mixer_trains_in_every_rank(mixer, spatial_dims):
    torch.manual_seed(0)
    levels = (1, 1) if mixer == "recattn" else (3, 1)
    model = RecNeXt((8, 16), (1, 1), spatial_dims=spatial_dims, in_chans=1, num_classes=3,
                    token_mixer=mixer, levels=levels)  # fmt: skip
    x = torch.randn(SHAPES[spatial_dims])
    model(x).square().sum().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters())


def test_dense_kernel_is_the_effective_kernel_rounded_up_to_odd_and_capped():
    assert DenseMixer(kernel_size=5).kernel(3, 2) == ((41, 41), False)
    assert DenseMixer(kernel_size=(3, 5), factor=(1, 2)).kernel(2, 2) == ((3, 21), False)
    assert DenseMixer(kernel_size=5, max_kernel_size=31).kernel(4, 1) == ((31,), True)
    assert DenseMixer(kernel_size=5, max_kernel_size=30).kernel(4, 1) == ((29,), True)


@pytest.mark.parametrize("size", [(3, 40), (7, 8), (30, 30)])
def test_a_kernel_larger_than_the_input_is_cropped_exactly(size):
    conv = LargeKernelConv(2, (41, 13)).double()
    x = torch.randn(1, 2, *size, dtype=torch.float64)
    full = F.conv2d(x, conv.weight, padding=(20, 6), groups=2)
    torch.testing.assert_close(conv(x), full, rtol=0, atol=1e-12)
    assert count_flops(lambda: conv(x)) == conv.flops(size, size)


@pytest.mark.parametrize("level", [0, 1, 3])
def test_the_dilated_stack_is_the_shortest_that_reaches_recconvs_receptive_field(level):
    mixer = DilatedMixer(kernel_size=5)
    target = recconv.receptive_field(recconv.RecConv2d(1, 5, level))
    stack = mixer(4, level=level, stage=0, spatial_dims=2)
    reach = recconv.receptive_field(stack)
    assert all(r >= t for r, t in zip(reach, target))
    shorter = DilatedStack(*list(stack)[:-1])
    assert len(stack) == 1 or any(r < t for r, t in zip(recconv.receptive_field(shorter), target))


def test_the_dilated_stack_stops_growing_an_axis_that_reached_its_target():
    # Video's geometry: time (factor 1) needs many convs; height and width must not over-reach.
    mixer = DilatedMixer(kernel_size=3, factor=(1, 2, 2))
    target = recconv.receptive_field(recconv.RecConv3d(1, 3, 3, factor=(1, 2, 2)))
    stack = mixer(2, level=3, stage=0, spatial_dims=3)
    reach = recconv.receptive_field(stack)
    for axis, (r, t) in enumerate(zip(reach, target)):
        last = [conv for conv in stack if conv.kernel_size[axis] > 1][-1]
        assert r - (last.kernel_size[axis] - 1) * last.dilation[axis] < t <= r


def test_haar_down_then_up_is_the_orthogonal_projection_on_block_constants():
    down, up = HaarDown(1, (3, 3), (2, 2)), HaarUp(1, (3, 3), (2, 2))
    x = torch.randn(1, 1, 8, 6, dtype=torch.float64)
    coarse = down(x)
    projected = up(coarse, (8, 6))
    torch.testing.assert_close(coarse.square().sum(), projected.square().sum())  # orthonormal
    torch.testing.assert_close(up(down(projected), (8, 6)), projected)  # idempotent
    torch.testing.assert_close((x - projected).mul(projected).sum(), torch.tensor(0.0, dtype=torch.float64))


def test_haar_down_pads_a_partial_block_with_zeros():
    x = torch.ones(1, 1, 5)
    torch.testing.assert_close(HaarDown(1, (3,), (2,))(x), torch.tensor([[[2.0, 2.0, 1.0]]]) / math.sqrt(2))


def test_haar_down_refuses_a_causal_axis():
    with pytest.raises(
        ValueError, match="HaarDown: a Haar block reads its own future samples, so it cannot be causal"
    ):
        recconv.RecConv1d(4, 3, 2, causal=True, downsample="haar")


@pytest.mark.parametrize("size", [(13,), (6, 9)])
def test_the_global_conv_is_a_direct_convolution_with_a_kernel_as_wide_as_the_input(size):
    torch.manual_seed(0)
    conv = GlobalConv(3, len(size), modes=3).double()
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    kernel = None  # taps -(n-1)..n-1 per axis, then the separable product
    for axis, circular in enumerate(conv.kernels(size, torch.float64)):
        n = size[axis]
        taps = torch.cat((circular[:, n + 1 :], circular[:, :n]), -1)
        shape = [3] + [1] * len(size)
        shape[1 + axis] = 2 * n - 1
        kernel = taps.reshape(shape) if kernel is None else kernel * taps.reshape(shape)
    conv_fn = (F.conv1d, F.conv2d)[len(size) - 1]
    direct = conv_fn(
        x, kernel.flip(list(range(1, len(size) + 1)))[:, None], padding=[n - 1 for n in size], groups=3
    )
    torch.testing.assert_close(conv(x), direct, rtol=0, atol=1e-10)
    assert recconv.receptive_field(conv) == (math.inf,) * len(size)


def test_fft_flops_are_counted():
    conv = GlobalConv(3, 1, modes=4)
    # rfft of input and kernel and one inverse, 32 points each (2.5 N log2 N), 17 complex products per channel
    assert count_flops(lambda: conv(torch.randn(1, 3, 16))) == 3 * 3 * int(2.5 * 32 * 5) + 6 * 3 * 17


def test_a_mixer_refuses_options_it_does_not_have():
    with pytest.raises(ValueError, match="RecNeXt: upsample does not apply to token_mixer='fft'"):
        RecNeXt(token_mixer="fft", upsample="linear")
