"""Where a compiled RecConv training step spends its time, and what layout costs a depthwise backward.

Run: ``python benchmarks/compiled_backward.py [--stored | --eager] [--threads 2]``

1. Profiles ``torch.compile(RecConv2d(64, 5, 3))`` training steps on (8, 64, 56, 56) with ``torch.profiler``
   and prints the ops by self time. ``--stored`` profiles the layer storing its intermediates (no
   recomputation in backward): the setting in which Inductor's backward graph has no convolutions and
   feeds ``convolution_backward`` tensors in an (N, H, C, W) layout (see docs/performance.md).
   ``--eager`` profiles the same steps without ``torch.compile``, for comparison.
2. Times ``aten.convolution_backward`` of that depthwise conv alone on contiguous, channels-last and
   (N, H, C, W) tensors (medians of 5).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from recconv import RecConv2d

SHAPE = (8, 64, 56, 56)
LAYOUTS = {
    "contiguous": lambda t: t.contiguous(),
    "channels-last": lambda t: t.contiguous(memory_format=torch.channels_last),
    "(N, H, C, W)": lambda t: t.transpose(1, 2).contiguous().transpose(1, 2),
}


def profile_training_step(stored: bool, eager: bool) -> str:
    layer = RecConv2d(SHAPE[1], 5, 3)
    layer.recompute = not stored
    compiled = layer if eager else torch.compile(layer)
    x = torch.randn(SHAPE, requires_grad=True)
    for _ in range(2):  # compile and warm up
        compiled(x).square().mean().backward()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(3):
            compiled(x).square().mean().backward()
    return prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=12)


def time_conv_backward() -> dict[str, float]:
    channels = SHAPE[1]
    weight = torch.randn(channels, 1, 5, 5)
    medians = {}
    for name, layout in LAYOUTS.items():
        x, grad = layout(torch.randn(SHAPE)), layout(torch.randn(SHAPE))
        times = []
        for _ in range(5):
            start = time.perf_counter()
            torch.ops.aten.convolution_backward(
                grad, x, weight, [0], [1, 1], [2, 2], [1, 1], False, [0, 0], channels, [True, True, False]
            )
            times.append(time.perf_counter() - start)
        medians[name] = 1000 * statistics.median(times)
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--stored", action="store_true", help="profile the layer that stores its intermediates"
    )
    parser.add_argument("--eager", action="store_true", help="profile the layer without torch.compile")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(profile_training_step(args.stored, args.eager))
    print(f"depthwise conv backward on {SHAPE}, k=5, median ms:")
    for name, ms in time_conv_backward().items():
        print(f"  {name}: {ms:.1f}")


if __name__ == "__main__":
    main()
