#!/usr/bin/env bash
# One GPU check in under 5 minutes: the CUDA tests, the layer benchmark and one example's smoke run,
# written as one Markdown report.
#
# Run from the repository root: bash benchmarks/gpu_check.sh [REPORT.md]   (default: gpu_check.md)
set -u
report=${1:-gpu_check.md}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

step() {  # step NAME SECONDS COMMAND...: run with a time limit, keep its output, record the result
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS status
    timeout "$limit" "$@" >"$work/$name.log" 2>&1
    status=$?
    echo "| $name | \`$*\` | $([ $status -eq 0 ] && echo passed || echo "failed (exit $status)") | $((SECONDS - start)) |" >>"$work/steps.md"
}

step cuda-tests 70 python -m pytest -q -m cuda -p no:cacheprovider $(grep -l "pytest.mark.cuda" tests/*.py)
step layer-benchmark 150 python benchmarks/bench_gpu.py --repeats 10
step example-smoke 70 python -m examples.audio_keywords --smoke --device cuda --amp bf16 --compile --out "$work/example"

{
    echo "# GPU check"
    echo
    echo "\`bash benchmarks/gpu_check.sh\` at commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%Y-%m-%dT%H:%MZ)."
    echo "$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
    echo
    echo "| step | command | result | seconds |"
    echo "|---|---|---|---|"
    cat "$work/steps.md"
    echo
    echo "## Layer benchmark"
    echo
    grep -E '^(GPU:|\|)' "$work/layer-benchmark.log" || echo "(no table: see the log below)"
    for name in cuda-tests layer-benchmark example-smoke; do
        echo
        echo "<details><summary>$name log (last 30 lines)</summary>"
        echo
        echo '```'
        tail -n 30 "$work/$name.log"
        echo '```'
        echo "</details>"
    done
} >"$report"
echo "wrote $report"
