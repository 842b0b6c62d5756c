"""Detector test fixtures: prepared models (a missing model fails, never skips) and test images."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from detect.models.prepare import prepare_models

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def model_paths() -> dict[str, Path]:
    cache = Path(os.environ.get("GRIDWATCH_MODELS_DIR", str(REPO / ".cache" / "models")))
    return prepare_models(cache, progress=lambda _msg: None)


def _ultralytics_asset(name: str) -> np.ndarray:
    # Located without importing ultralytics (which would pull torch into the test process).
    spec = importlib.util.find_spec("ultralytics")
    assert spec is not None and spec.submodule_search_locations, (
        "ultralytics (for its assets) is not installed"
    )
    path = Path(next(iter(spec.submodule_search_locations))) / "assets" / name
    image = cv2.imread(str(path))
    assert image is not None, f"cannot read {path}"
    return image


@pytest.fixture(scope="session")
def bus_bgr() -> np.ndarray:
    return _ultralytics_asset("bus.jpg")


@pytest.fixture(scope="session")
def zidane_bgr() -> np.ndarray:
    return _ultralytics_asset("zidane.jpg")
