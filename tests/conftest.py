from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Environments that build the synthetic site cache it here, never in the user's home.
    os.environ["WEBDANCER_CACHE"] = str(tmp_path_factory.mktemp("webdancer-cache"))
    os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.exists():
        pytest.skip(f"shared data not found at {SHARED}; these tests need the ../shared checkout")
    return SHARED


@pytest.fixture(scope="session")
def synthetic_web(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic web directory (store + search index + graph), built once."""
    from webdancer.web.webdir import build_synthetic_web

    out = tmp_path_factory.mktemp("web") / "site"
    build_synthetic_web(out, pages=400, seed=0, progress=False)
    return out
