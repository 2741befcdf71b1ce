"""Session-scoped fixtures every package's tests share: the real-data folder,
the converted backbone, small real models (handed out as copies, so a test
that writes into its model cannot change another test's) and one Spark session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.paths import SHARED_DATA

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that read it skip with the reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it lives beside the repository, see README)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def backbone_dir() -> Path:
    """The converted SmolLM2 directory (converted once from the shipped GGUF)."""
    from notellm.backbone import ensure_default_backbone

    return ensure_default_backbone()


@pytest.fixture(scope="session")
def _tiny_llama_original(tmp_path_factory, backbone_dir) -> Path:
    from tests.support.models import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("tiny_llama"), tokenizer_dir=backbone_dir)


@pytest.fixture(scope="module")
def tiny_llama_dir(_tiny_llama_original, tmp_path_factory) -> Path:
    """A copy of a 2-layer random Llama with the real tokenizer, private to one test module."""
    return Path(shutil.copytree(_tiny_llama_original, tmp_path_factory.mktemp("tiny_llama_copy") / "llama"))


@pytest.fixture(scope="session")
def _tiny_encoder_original(tmp_path_factory, backbone_dir) -> Path:
    from tests.support.models import tiny_model

    return tiny_model(tmp_path_factory.mktemp("tiny_encoder"), dim=16)


@pytest.fixture(scope="module")
def tiny_encoder_dir(_tiny_encoder_original, tmp_path_factory) -> Path:
    """A copy of a saved tiny NoteLLM encoder (d=16) on the tiny Llama, private to one test module."""
    return Path(shutil.copytree(_tiny_encoder_original, tmp_path_factory.mktemp("tiny_encoder_copy") / "model"))


@pytest.fixture(scope="session")
def spark():
    """One local[2] session for all Spark tests (JVM start-up dominates tiny jobs)."""
    from jobs.spark_session import build_spark

    return build_spark("notellm-tests", "local[2]", shuffle_partitions=4, driver_memory="2g")


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory):
    """A real standalone cluster on 127.0.0.1: a master and two workers of 1 core
    and 3 GB (logs under the session's tmp folder, kept for a failed run)."""
    from tests.support.spark_cluster import StandaloneCluster

    cluster = StandaloneCluster(tmp_path_factory.mktemp("spark-cluster"), workers=2, cores=1, memory="3g").start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def jobs_package(tmp_path_factory) -> dict:
    """The Spark jobs packaged as the DAGs ship them (``python -m jobs.package``)."""
    from jobs.package import build

    return build(tmp_path_factory.mktemp("jobs-package"))
