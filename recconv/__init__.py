"""recconv: RecConv (arXiv 2412.19628) and RecAttn in 1D, 2D and 3D on one recursive core."""

from .attention import LinearAttention, RecAttn1d, RecAttn2d, RecAttn3d, RecAttnNd
from .core import RecConv1d, RecConv2d, RecConv3d, RecConvNd
from .streaming import CausalConv, Streamer
from .swap import swap, swapped
from .swap_report import SwapReport
from .theory import (
    conv_flops,
    effective_kernel_size,
    flop_ratio,
    flop_ratio_limit,
    level_sizes,
    num_params,
    receptive_field,
    receptive_field_window,
)

__version__ = "0.2.0.dev0"

__all__ = [
    "CausalConv",
    "LinearAttention",
    "RecAttn1d",
    "RecAttn2d",
    "RecAttn3d",
    "RecAttnNd",
    "RecConv1d",
    "RecConv2d",
    "RecConv3d",
    "RecConvNd",
    "Streamer",
    "SwapReport",
    "conv_flops",
    "effective_kernel_size",
    "flop_ratio",
    "flop_ratio_limit",
    "level_sizes",
    "num_params",
    "receptive_field",
    "receptive_field_window",
    "swap",
    "swapped",
]
