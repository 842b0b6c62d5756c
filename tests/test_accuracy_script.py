"""bench/accuracy.py's core on its shortest clip set (one labelled vtest segment and the empty street).

Real models, real media, the real detector loop and rules: a person segment must give true positives and
the empty street no alert at all, with the numbers in range.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _load_accuracy() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gridwatch_bench_accuracy", REPO / "bench" / "accuracy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_quick_set_gives_sane_numbers(models_dir: Path, media: dict[str, Path]) -> None:
    accuracy = _load_accuracy()
    media_dir = media["people"].parent
    report: dict[str, Any] = accuracy.evaluate(
        models_dir, media_dir, ["people"], crops="off", quick=True, progress=lambda _line: None
    )
    people = report["results"]["crops_off"]["people"]
    clips = {c["clip"]: c for c in people["clips"]}
    assert set(clips) == {"vtest-a", "empty-street"}

    vtest = clips["vtest-a"]
    assert vtest["frames_sampled"] == 40  # 20 s at 2 frames/s
    zones = vtest["zones"]
    assert sum(z["true_positives"] for z in zones.values()) >= 1
    assert zones["lawn"]["alerts_raised"] == 0  # nobody sets foot on the lawn in this segment
    assert vtest["fire"]["alerts_raised"] == 0

    empty = clips["empty-street"]
    assert sum(z["alerts_raised"] for z in empty["zones"].values()) == 0
    assert empty["fire"]["alerts_raised"] == 0

    total = people["person_in_zone"]
    assert total["alerts_expected"] >= 3
    assert 0.0 <= total["precision"] <= 1.0 and 0.0 < total["recall"] <= 1.0
    assert total["true_positives"] + total["false_positives"] == total["alerts_raised"]
