import os
import shutil
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("ASR_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def shared_data():
    """The real recordings beside the repository; tests that need them skip without them."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED} (set ASR_SHARED_DATA)")
    return SHARED


@pytest.fixture
def need_espeak():
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (bash tools/install_system_deps.sh)")
