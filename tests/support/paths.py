"""Where the repository and the real-data folder are."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Real data written by others lives beside the repository (CI lays it at ../shared).
SHARED_DATA = REPO.parent / "shared" / "data"
