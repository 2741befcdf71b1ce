# Source me: environment for running the NoteLLM DAGs locally with Airflow 3 + SQLite.
#   NOTELLM_ROOT   data root (default var/pipeline)
#   AIRFLOW_HOME   Airflow home with its SQLite metadata DB (default var/airflow)
_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export NOTELLM_ROOT="${NOTELLM_ROOT:-$_repo/var/pipeline}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$_repo/var/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$_repo/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-2}"
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=True
# Spark master for SparkSubmitOperator; point host at spark://..., yarn, k8s://... on a cluster.
export AIRFLOW_CONN_SPARK_DEFAULT="${AIRFLOW_CONN_SPARK_DEFAULT:-{\"conn_type\": \"spark\", \"host\": \"local[2]\"}}"
# Local mode: bind the Spark driver to loopback (spark-submit reads SPARK_LOCAL_IP).
export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"
# Spark driver class-data sharing, once `make spark-cds` has recorded the archive (docs/operations.md).
if [ -z "${NOTELLM_SPARK_CDS_ARCHIVE:-}" ] && [ -f "$_repo/var/spark-cds/driver.jsa" ]; then
  export NOTELLM_SPARK_CDS_ARCHIVE="$_repo/var/spark-cds/driver.jsa"
fi
# DeepSpeed's CPU op, built once by `make install` (Makefile, TORCH_EXTENSIONS_DIR).
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$_repo/.venv/torch_extensions}"
export NOTELLM_PYTHON="${NOTELLM_PYTHON:-$_repo/.venv/bin/python}"
# spark-submit, deepspeed and airflow come from the project's virtualenv.
export PATH="$_repo/.venv/bin:$PATH"
unset _repo
