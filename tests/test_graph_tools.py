"""Graph tools see through every layer and model: torch.fx, torchvision's feature extraction, torch.export."""

from __future__ import annotations

import re

import pytest
import torch
import torchvision
from torch.export import Dim
from torchvision.models.feature_extraction import create_feature_extractor

import recconv
from recconv import RecAttn1d, RecAttn2d, RecAttn3d, RecConv1d, RecConv2d, RecConv3d
from recconv.models import create_model, list_models

LAYERS = {
    "recconv1d-causal": (lambda: RecConv1d(4, 5, 3, causal=True), (2, 4, 37)),
    "recconv2d": (lambda: RecConv2d(4, 5, 2), (2, 4, 29, 31)),
    "recconv2d-transposed-avgpool": (
        lambda: RecConv2d(4, 3, 2, upsample="transposed", downsample="avgpool"),
        (2, 4, 17, 12),
    ),
    "recconv3d-video": (
        lambda: RecConv3d(4, 3, 2, factor=(1, 2, 2)),
        (2, 4, 5, 13, 11),
    ),  # batch 2: export specializes a batch of 1
    "recattn1d": (lambda: RecAttn1d(8, 2, level=2), (2, 8, 41)),
    "recattn2d": (lambda: RecAttn2d(8, 2), (2, 8, 13, 11)),
    "recattn3d": (lambda: RecAttn3d(8, 2, kernel_size=3, factor=(1, 2, 2)), (2, 8, 4, 9, 7)),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_symbolic_trace_of_every_layer_computes_the_layer(name):
    make, shape = LAYERS[name]
    layer = make().eval()
    traced = torch.fx.symbolic_trace(layer)
    x = torch.randn(shape)
    assert torch.equal(traced(x), layer(x))
    with pytest.raises(ValueError, match=re.escape(f"expected (N, {shape[1]},")):
        traced(torch.randn(shape[0], shape[1] + 1, *shape[2:]))  # the traced graph still checks


@pytest.mark.parametrize("name", list_models())
def test_symbolic_trace_of_every_preset_in_train_and_eval_mode(name):
    model = create_model(name, device="meta")
    for training in (True, False):
        graph = torch.fx.symbolic_trace(model.train(training)).graph
        assert any(node.op == "call_module" for node in graph.nodes)


def test_feature_extractor_on_recnext_m0_without_leaf_modules():
    model = create_model("recnext_m0", num_classes=10).eval()
    extractor = create_feature_extractor(model, return_nodes={"stages.1": "s1", "stages.3": "s3"})
    x = torch.randn(1, 3, 64, 64)
    features = extractor(x)
    expected = create_model("recnext_m0", num_classes=10, features_only=True, out_indices=(1, 3)).eval()
    expected.load_state_dict(model.state_dict(), strict=False)
    for got, want in zip(features.values(), expected(x)):
        assert torch.equal(got, want)


def test_feature_extractor_on_a_swapped_convnext_tiny():
    net, _ = recconv.swap(torchvision.models.convnext_tiny(), level=2)
    net.eval()
    extractor = create_feature_extractor(net, return_nodes={"features.3": "f3"})
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(extractor(x)["f3"], net.features[:4](x))


# torch.export proves the size guards of these layers for every spatial size from 2**level + 1 on;
# for the others (a transposed up op, a factor-1 axis, attention's 1D and 3D reshapes) it cannot
# yet, and their spatial sizes stay static.
DYNAMIC_SPATIAL = ("recconv1d-causal", "recconv2d", "recattn2d")


@pytest.mark.parametrize("name", list(LAYERS))
def test_export_with_dynamic_batch_and_spatial_sizes(name):
    make, shape = LAYERS[name]
    layer = make().eval()
    dynamic = {0: Dim("batch")}
    if name in DYNAMIC_SPATIAL:  # the coarsest level keeps 2 or more samples (export specializes 1)
        dynamic |= {i + 2: Dim(f"size{i}", min=2**layer.level + 1, max=4096) for i in range(len(shape) - 2)}
    program = torch.export.export(layer, (torch.randn(shape),), dynamic_shapes=(dynamic,))
    for grow in (1, 6):  # sizes not divisible by 2**level included
        spatial = [s + grow if name in DYNAMIC_SPATIAL else s for s in shape[2:]]
        x = torch.randn(shape[0] + grow, shape[1], *spatial)
        torch.testing.assert_close(program.module()(x), layer(x), rtol=1e-5, atol=1e-5)
