"""The ``recconv`` command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from recconv.cli import cost_rows, main


def test_costs_prints_the_counted_table(capsys):
    assert main(["costs", "--dims", "2", "--levels", "1", "3", "--size", "32", "--channels", "8"]) == 0
    out = capsys.readouterr().out
    assert "| 2D | 1 | 19 | 600 | 3.00 | 1.500 |" in out
    assert "| 2D | 3 | 109 | 1,000 | 5.00 | 1.656 |" in out


def test_cost_rows_follow_the_paper():
    for row in cost_rows([1, 2, 3], [1, 2, 3, 4], kernel_size=5, size=64, channels=4):
        d = int(row["rank"][0])
        assert row["params_vs_k"] == row["level"] + 2
        assert row["flops_vs_k"] < 1 + 2 / (2**d - 1)
        assert row["dense_kernel"] == 5 * 2 ** row["level"] + 1


@pytest.mark.parametrize(
    "argv",
    [
        ["costs", "--dims", "4"],
        ["costs", "--kernel-size", "4"],
        ["costs", "--size", "0"],
        [],
        ["swap", "os:system"],  # never called: not a model builder
    ],
)
def test_bad_arguments_are_argparse_errors(argv):
    result = subprocess.run([sys.executable, "-m", "recconv", *argv], capture_output=True, text=True)
    assert result.returncode == 2
    assert "usage: recconv" in result.stderr
    assert "Traceback" not in result.stderr
