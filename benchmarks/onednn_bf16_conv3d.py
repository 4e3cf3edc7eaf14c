"""The upstream fault that ``recconv.ops`` works around: oneDNN's bfloat16 depthwise conv3d backward.

Run: ``python benchmarks/onednn_bf16_conv3d.py``. For a depthwise ``F.conv3d`` (24 channels, 'same'
padding, kernels (3, 5, 5) and (5, 5, 5)) on a few input sizes, prints the relative error of the
weight's gradient in bfloat16 against float32, with contiguous and with channels-last input. Rounding
alone gives about 0.003. On the Intel Xeon (AVX-512, AMX) of this project's later sessions, torch 2.14.1, channels-last
input read errors near 1 (a wrong gradient) on some small inputs: with kernel (3, 5, 5), the video
preset's, a (4, 1, 1) map, as a coarse RecConv level gets; with (5, 5, 5), every input of 4 frames.
``ONEDNN_MAX_CPU_ISA=AVX2`` made them right. So RecConv layers hand such convs contiguous input
(``recconv.ops._depthwise_conv``), and ``tests/test_precision.py`` checks a layer's bfloat16 gradients.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

SIZES = [(4, 1, 1), (4, 2, 2), (4, 4, 4), (4, 8, 8), (8, 8, 8), (8, 16, 16)]
KERNELS = [(3, 5, 5), (5, 5, 5)]
CHANNELS = 24


def weight_gradient(
    x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    weight = weight.to(dtype).detach().requires_grad_()
    out = F.conv3d(x.to(dtype), weight, None, 1, [k // 2 for k in weight.shape[2:]], 1, CHANNELS)
    out.backward(grad.to(dtype))
    assert weight.grad is not None
    return weight.grad.float()


def main() -> None:
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print("| kernel | input (T, H, W) | contiguous | channels-last |")
    print("|---|---|---|---|")
    for kernel, size in itertools.product(KERNELS, SIZES):
        x = torch.randn(2, CHANNELS, *size)
        weight = torch.randn(CHANNELS, 1, *kernel)
        grad = torch.randn(2, CHANNELS, *size)
        expected = weight_gradient(x, weight, grad, torch.float32)
        errors = []
        for layout in (torch.contiguous_format, torch.channels_last_3d):
            got = weight_gradient(x.contiguous(memory_format=layout), weight, grad, torch.bfloat16)
            errors.append(f"{((got - expected).norm() / expected.norm()).item():.3g}")
        print(f"| {kernel} | {size} | {' | '.join(errors)} |")


if __name__ == "__main__":
    main()
