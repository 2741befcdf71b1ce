#!/usr/bin/env bash
# The GPU quality run (issue 18). The logic is in evaluation/gpu_run.py; this keeps the verbs.
#
#   bash scripts/gpu_run.sh receive        on the GPU host, every device call: keep the carried part(s)
#   bash scripts/gpu_run.sh run OUTDIR     on the GPU host, the last call: receive, check and join every
#                                          part, install the wheels, then backbone, GPU tests, one epoch,
#                                          evaluation, report -> OUTDIR (report.md, metrics.json, plots/,
#                                          gpu_run.log, gpu_tests.log)
#   bash scripts/gpu_run.sh dry OUTDIR     on a CPU: the same on a tiny fixture bundle (tiny Llama, tiny
#                                          BERT, a few pairs, no wheels) in several parts; make test runs it
#
# The parts come from `make gpu-bundle` (var/gpu-bundle/part-<k>/); `make gpu-run` prints the device calls.
# Environment: PY (python3; on the host the one with torch), STORE (/tmp/notellm-gpu: the parts, the
# extracted bundle, the wheels' site folder and the converted backbone), BUNDLE (var/gpu-bundle).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-python3}
STORE=${STORE:-/tmp/notellm-gpu}
BUNDLE=${BUNDLE:-var/gpu-bundle}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

usage() { sed -n '2,14p' "$0" >&2; exit 2; }

receive() {   # [part names]: every part-<k>/ present by default
    if [ $# -gt 0 ]; then set -- --parts "$@"; fi
    if compgen -G "$BUNDLE/part-*" >/dev/null; then
        "$PY" -m evaluation.gpu_run receive --bundle "$BUNDLE" --store "$STORE" "$@"
    else
        echo "gpu_run.sh: no part carried under $BUNDLE" >&2
    fi
}

run() {       # OUTDIR [python -m evaluation.gpu_run run settings]
    local out=$1; shift
    mkdir -p "$out"
    {
        receive
        "$PY" -m evaluation.gpu_run prepare --store "$STORE"
        export PYTHONPATH="$STORE/site:$STORE/bundle/shims${PYTHONPATH:+:$PYTHONPATH}" NOTELLM_CACHE="$STORE/cache"
        "$PY" -m evaluation.gpu_run run --store "$STORE" --out "$out" "$@"
    } 2>&1 | tee -a "$out/gpu_run.log"
}

dry() {       # OUTDIR: bundle from a tiny fixture, received part by part, then run on the CPU
    local out=$1 tmp
    # DeepSpeed's CPU op as `make install` built it (the Makefile exports the same)
    [ -d .venv/torch_extensions ] && export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/.venv/torch_extensions}
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/gpu-dry.XXXXXX")
    DRY_TMP=$tmp
    trap 'rm -rf "$DRY_TMP"' EXIT
    "$PY" -m evaluation.gpu_dry --out "$tmp/fixture"
    "$PY" -m evaluation.gpu_bundle --work "$tmp/fixture/work" --data "$tmp/fixture/no-dumps" \
        --backbone "$tmp/fixture/tiny-llama" --minilm "$tmp/fixture/tiny-minilm" --no-wheels \
        --part-mib "${DRY_PART_MIB:-4}" --out "$tmp/bundle"
    BUNDLE="$tmp/bundle" STORE="$tmp/store"
    local part
    for part in "$tmp"/bundle/part-*; do    # one device call per part
        receive "$(basename "$part")"
    done
    rm -rf "$tmp/bundle"                     # the last call carries no part: run finds them all in the store
    run "$out" --device cpu --batch-pairs 8 --gen-notes 1 --cases 2 --budget-s 60
}

verb=${1:-}
case "$verb" in
    receive) shift; receive "$@" ;;
    run) [ $# -ge 2 ] || usage; shift; run "$@" ;;
    dry) [ $# -eq 2 ] || usage; dry "$2" ;;
    *) usage ;;
esac
