#!/usr/bin/env bash
# The GPU check: everything that runs on CUDA, in one script that finishes well inside 10
# minutes on one H200-class GPU and can simply be run again. From the repository root:
#
#   bash benchmarks/gpu.sh [OUT]        # logs and run.py's pages in OUT (default: a temp dir)
#
# 1. the CUDA tests (tests/test_cuda.py, marked `cuda`: every stage in fp32 and bf16 against
#    the CPU, evaluation, top-k, EASE, device: auto);
# 2. benchmarks/run.py --device cuda on ml-100k and the ML-20M shape: s/epoch per stage, the
#    share of the GPU's matmul rate, peak GPU memory, the one-seed study estimate;
# 3. a tiny ml-100k study with `device: cuda` through workflow/profiles/gpu (needs snakemake;
#    skipped, and said, without it);
# then writes benchmarks/results/gpu.md from them (run `python benchmarks/run.py
# --summary-only` afterwards to fold it into latest.md). It needs a python with torch built for
# CUDA and the project's dependencies (PYTHON=..., default python3); nothing is downloaded:
# ml-100k is read from data/raw (run `ract fetch ml-100k` once where there is a network and
# carry data/raw along). DEVICE=cpu DATASETS=ml-100k runs the same steps on the CPU, to check
# the script itself where there is no GPU; its page then stays in OUT.
set -uo pipefail
root=$PWD
out=${1:-$(mktemp -d)}
py=${PYTHON:-python3}
case $py in */*) [[ $py = /* ]] || py=$root/$py ;; esac # the study runs in another folder
device=${DEVICE:-cuda}
datasets=${DATASETS-ml-100k ml-20m-synthetic}
page=$root/benchmarks/results/gpu.md
[ "$device" = cuda ] || page=$out/gpu.md
mkdir -p "$out"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
: >"$out/steps.txt"

step() { # name, command...: its output in OUT/name.log, one line in OUT/steps.txt
    local name=$1 t0=$SECONDS rc
    shift
    "$@" >"$out/$name.log" 2>&1
    rc=$?
    echo "| $name | $rc | $((SECONDS - t0)) | $(grep -v '^ *$' "$out/$name.log" | tail -n 1 | tr '|' '/') |" \
        | tee -a "$out/steps.txt"
}

tiny_study() {
    local work
    work=$(mktemp -d)
    mkdir -p "$work/data" && cp -r "$root/data/raw" "$work/data/raw"
    cat >"$work/study.yaml" <<'YAML'
datasets:
  ml-100k: {source: ml-100k, offline: true}
seeds: [1]
device: DEVICE
models: [nll_finetune, ease, popularity]
stages:
  actor_pretrain: {epochs: 20}
  critic_pretrain: {epochs: 5, min_steps: 200}
  finetune: {epochs: 5}
baselines:
  ease: {lambdas: [200, 500]}
YAML
    sed -i "s/DEVICE/$device/" "$work/study.yaml"
    (cd "$work" && "$py" -m snakemake --snakefile "$root/Snakefile" \
        --profile "$root/workflow/profiles/gpu" --configfile study.yaml) \
        && cat "$work/results/ml-100k/comparison.md"
}

nvidia-smi >"$out/nvidia-smi.txt" 2>&1
RACT_TEST_DEVICE=$device step cuda-tests "$py" -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py
# shellcheck disable=SC2086 # the data sets are words
step benchmark "$py" benchmarks/run.py --device "$device" --threads "$(nproc)" \
    --datasets $datasets --cache data/raw --out "$out"
if "$py" -c "import snakemake" 2>/dev/null; then
    step study tiny_study
else
    echo "| study | skipped | 0 | snakemake is not installed for $py |" | tee -a "$out/steps.txt"
fi

{
    echo "# GPU"
    echo
    echo "\`bash benchmarks/gpu.sh\` on $(nvidia-smi --query-gpu=name,memory.total \
        --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi'), $(date -u '+%Y-%m-%d %H:%M') UTC;"
    echo "torch $("$py" -c 'import torch; print(torch.__version__, torch.version.cuda)')."
    echo
    echo "| step | exit status | seconds | last line of its log |"
    echo "|---|---|---|---|"
    cat "$out/steps.txt"
    if [ -f "$out/latest.md" ]; then
        echo
        sed -n '/^| |/,/^$/p' "$out/latest.md"
    fi
} >"$page"
cat "$page"
awk -F'|' '$3 !~ /^ (0|skipped) $/ { failed = 1 } END { exit failed }' "$out/steps.txt"
