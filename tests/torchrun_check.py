"""Run an example under a 2-process ``torchrun`` (gloo on CPU) and check what the processes end with.

Shared by the example tests: :func:`torchrun_two_processes` runs ``examples.<module>`` through a
small driver that saves each rank's trained parameters, and checks what every example must do
under ``torchrun``: both ranks end with identical parameters, only rank 0 writes, the results
count every test example once and the saved checkpoint is rank 0's model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

_DRIVER = """\
import importlib, os, sys, torch
from examples.kit import harness
example = importlib.import_module("examples." + {module!r})
trained, train_model = {{}}, harness.train_model
def capture(name, *args, **kwargs):
    trained[name], result = train_model(name, *args, **kwargs)
    return trained[name], result
harness.train_model = capture
example.EXAMPLE.main(sys.argv[1:])
state = {{name: model.state_dict() for name, model in trained.items()}}
torch.save(state, os.path.join({folder!r}, "rank" + os.environ["RANK"] + ".pt"))
"""


def torchrun_two_processes(module: str, tmp_path: Path, *flags: str) -> dict:
    """Run ``examples.<module> --device cpu --out <tmp_path>/out <flags>`` on two processes,
    assert that both ranks trained the same models to the same parameters, and return the
    results written by rank 0."""
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER.format(module=module, folder=str(tmp_path)))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(driver),
    ]
    out = tmp_path / "out"
    done = subprocess.run(
        [*command, "--device", "cpu", "--out", str(out), *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es) on cpu" in done.stdout and done.stdout.count("wrote results.json") == 1
    assert "recconv test accuracy" in done.stdout
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert set(ranks[0]) == {"recconv", "small"}
    for name, state in ranks[0].items():
        assert state.keys() == ranks[1][name].keys()
        assert all(torch.equal(value, ranks[1][name][key]) for key, value in state.items()), name
    results = json.loads((out / "results.json").read_text())
    assert results["training"]["processes"] == 2
    for name, result in results["models"].items():
        assert sum(map(sum, result["confusion"])) == results["data"]["test"], name
        saved = torch.load(out / f"{name}.pt", weights_only=True)["model"]
        assert all(torch.equal(saved[key], value) for key, value in ranks[0][name].items()), name
    return results
