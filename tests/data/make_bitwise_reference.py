"""Write ``bitwise_reference.pt``: weights, inputs and outputs of default layers and presets.

Run once at commit c08b93e, before the op-protocol refactor, so that
``tests/test_bitwise.py`` can prove the refactored code computes bit for bit the same outputs
from the same weights. Rerunning it on a later commit only records that commit's outputs.

    python tests/data/make_bitwise_reference.py
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from recconv import RecAttn1d, RecAttn2d, RecAttn3d, RecConv1d, RecConv2d, RecConv3d
from recconv.models import create_model
from recconv.ops import depthwise_conv_norm

LAYERS = {
    "recconv1d": (functools.partial(RecConv1d, 8, 5, 3), (2, 8, 67)),
    "recconv2d": (functools.partial(RecConv2d, 8, 5, 3), (2, 8, 37, 30)),
    "recconv3d": (functools.partial(RecConv3d, 4, 3, 2, factor=(1, 2, 2)), (1, 4, 6, 13, 10)),
    "recconv2d_nearest_avgpool": (
        functools.partial(RecConv2d, 8, 3, 2, upsample="nearest", downsample="avgpool"),
        (2, 8, 21, 18),
    ),
    "recconv2d_transposed_maxpool": (
        functools.partial(RecConv2d, 8, 3, 2, upsample="transposed", downsample="maxpool", bias=True),
        (2, 8, 21, 18),
    ),
    "recconv1d_causal": (functools.partial(RecConv1d, 8, 5, 3, causal=True), (2, 8, 50)),
    "recconv2d_unshared_causal1": (
        functools.partial(RecConv2d, 8, 3, 2, shared_down=False, causal=1),
        (2, 8, 16, 19),
    ),
    "recconv2d_conv_norm": (functools.partial(RecConv2d, 8, 3, 2, conv=depthwise_conv_norm), (2, 8, 20, 20)),
    "recattn1d": (functools.partial(RecAttn1d, 8, 2, level=2), (2, 8, 40)),
    "recattn2d": (functools.partial(RecAttn2d, 8, 2), (2, 8, 14, 11)),
    "recattn3d": (functools.partial(RecAttn3d, 8, 2, kernel_size=3, factor=(1, 2, 2)), (1, 8, 4, 8, 6)),
}

SMALL = {"widths": (8, 16, 24, 32), "depths": (1, 1, 2, 1)}
MODELS = {
    "recnext_m0_small": (
        functools.partial(create_model, "recnext_m0", num_classes=7, **SMALL),
        (2, 3, 64, 56),
    ),
    "recnext_a0_small": (
        functools.partial(create_model, "recnext_a0", num_classes=7, **SMALL),
        (2, 3, 64, 56),
    ),
    "recnext_audio_tiny": (functools.partial(create_model, "recnext_audio_tiny"), (2, 1, 64, 100)),
    "recnext_video_tiny_small": (
        functools.partial(create_model, "recnext_video_tiny", num_classes=5, **SMALL),
        (1, 3, 8, 64, 64),
    ),
    "recnext_seq_tiny": (functools.partial(create_model, "recnext_seq_tiny"), (2, 1, 300)),
}


def record() -> dict[str, dict[str, torch.Tensor | dict[str, torch.Tensor]]]:
    records = {}
    for index, (name, (make, shape)) in enumerate({**LAYERS, **MODELS}.items()):
        torch.manual_seed(index)
        module = make().eval()
        for buffer_name, buffer in module.named_buffers():  # non-trivial BatchNorm statistics
            if buffer_name.endswith(("running_mean", "running_var")):
                buffer.copy_(torch.rand_like(buffer) + (0.5 if buffer_name.endswith("var") else -0.5))
        x = torch.randn(shape)
        with torch.no_grad():
            out = module(x)
        records[name] = {"state": module.state_dict(), "input": x, "output": out}
    return records


if __name__ == "__main__":
    torch.set_num_threads(1)
    path = Path(__file__).with_name("bitwise_reference.pt")
    torch.save(record(), path)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.2f} MiB)")
