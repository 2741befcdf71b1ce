#!/usr/bin/env bash
# Start a local Airflow 3 (SQLite, LocalExecutor) bound to 127.0.0.1 only:
# API server + UI, scheduler, DAG processor and triggerer, no log servers on 0.0.0.0.
# Stop with Ctrl-C (all components stop together).
set -euo pipefail
source "$(dirname "$0")/airflow_env.sh"
export AIRFLOW__CORE__EXECUTOR=LocalExecutor
export AIRFLOW__API__HOST=127.0.0.1
export AIRFLOW__API__PORT="${AIRFLOW_PORT:-8080}"
export AIRFLOW__API__BASE_URL="http://127.0.0.1:${AIRFLOW__API__PORT}"
export AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=8793
export AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=8794
# Login: user 'admin'; the generated password is printed below and kept in
# $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin"
mkdir -p "$AIRFLOW_HOME" "$NOTELLM_ROOT"
airflow db migrate >/dev/null
pids=()
# Stop every component (and their workers) together: the whole process group.
trap 'trap - EXIT INT TERM; kill 0 2>/dev/null' EXIT INT TERM
airflow api-server --host 127.0.0.1 --port "$AIRFLOW__API__PORT" & pids+=($!)
airflow scheduler --skip-serve-logs & pids+=($!)
airflow dag-processor & pids+=($!)
airflow triggerer --skip-serve-logs & pids+=($!)
sleep 15
echo "Airflow UI: http://127.0.0.1:${AIRFLOW__API__PORT}  user: admin  password: $(cat "$AIRFLOW_HOME"/simple_auth_manager_passwords.json.generated 2>/dev/null)"
wait
