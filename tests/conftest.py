"""Hypothesis profiles: small and derandomized in CI, bigger on request.

``RECCONV_HYPOTHESIS_PROFILE=thorough pytest`` runs many more examples. A failing example
prints its reproduction as ``@reproduce_failure``; rerun with the same profile to replay it.
"""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow], "print_blob": True}
settings.register_profile("ci", max_examples=25, derandomize=True, **_COMMON)
settings.register_profile("dev", max_examples=50, **_COMMON)
settings.register_profile("thorough", max_examples=500, **_COMMON)
settings.load_profile(os.environ.get("RECCONV_HYPOTHESIS_PROFILE", "ci"))

# Test inputs are tiny: a second thread only adds hand-off cost per op (and the CI machine has 2 cores).
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
