from __future__ import annotations

from pathlib import Path

import pytest

from gridwatch.settings import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]

BASE = """\
villages:
  - {id: v1, name: Village One}
grids:
  - {id: g1, name: Grid One, village: v1}
cameras:
  - id: cam1
    name: Gate
    village: v1
    grid: g1
    url: rtsp://admin:SuperSecret9@10.0.0.9/ch1
rules:
  - {name: people, labels: [person]}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gw.yaml"
    path.write_text(text)
    return path


def test_demo_config_is_valid() -> None:
    settings = load_settings(REPO / "configs" / "demo.yaml", environ={})
    assert len(settings.cameras) == 3
    assert {c.village for c in settings.cameras} == {"dongshan", "xicun"}
    assert len({c.grid for c in settings.cameras}) == 2


def test_unknown_key_names_file_line_and_key(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE.replace("    grid: g1\n", "    grid: g1\n    colour: red\n"))
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    text = str(info.value)
    assert str(path) in text
    assert "cameras[0].colour (line 10): unknown key" in text


def test_bad_value_and_bad_reference(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE.replace("grid: g1\n    url", "grid: g9\n    detect_fps: -1\n    url"))
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert "cameras[0].detect_fps (line 10)" in str(info.value)


def test_reference_to_unknown_grid(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE.replace("grid: g1\n    url", "grid: g9\n    url"))
    with pytest.raises(ConfigError, match="unknown grid 'g9'"):
        load_settings(path, environ={})


def test_hostile_camera_url_is_refused_without_leaking_password(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE.replace("rtsp://admin", "http://admin"))
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert "only rtsp:// and rtsps://" in str(info.value)
    assert "SuperSecret9" not in str(info.value)


def test_camera_password_is_secret(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, BASE), environ={})
    assert "SuperSecret9" not in repr(settings)
    assert "SuperSecret9" not in settings.model_dump_json()


def test_environment_overrides(tmp_path: Path) -> None:
    env = {"GRIDWATCH_REDIS__URL": "redis://127.0.0.1:7000/0", "GRIDWATCH_CLIPS__POST_ROLL_S": "2.5"}
    settings = load_settings(_write(tmp_path, BASE), environ=env)
    assert settings.redis.url is not None
    assert settings.redis.url.get_secret_value() == "redis://127.0.0.1:7000/0"
    assert settings.clips.post_roll_s == 2.5
    tools = {"GRIDWATCH_MODELS_DIR": "/m", "GRIDWATCH_MEDIA_DIR": "/x", "GRIDWATCH_CONFIG": "c.yaml"}
    assert load_settings(_write(tmp_path, BASE), environ=tools).models.dir.name == "models"
    with pytest.raises(ConfigError, match=r"redsi \(from environment\): unknown key"):
        load_settings(_write(tmp_path, BASE), environ={"GRIDWATCH_REDSI__URL": "redis://x"})
    with pytest.raises(ConfigError, match=r"clips.post_roll_s \(from environment\)"):
        load_settings(_write(tmp_path, BASE), environ={"GRIDWATCH_CLIPS__POST_ROLL_S": "-3"})


def test_malformed_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_settings(_write(tmp_path, "cameras: [\n"), environ={})
    with pytest.raises(ConfigError, match="cannot read config"):
        load_settings(tmp_path / "nope.yaml", environ={})


def test_zones_masks_and_rule_references(tmp_path: Path) -> None:
    zoned = BASE.replace(
        "    url: rtsp://admin:SuperSecret9@10.0.0.9/ch1\n",
        "    url: rtsp://admin:SuperSecret9@10.0.0.9/ch1\n"
        "    zones:\n      - {name: gate, polygon: [[0.5, 0.5], [1, 0.5], [1, 1]]}\n"
        "    masks:\n      - [[0, 0], [0.2, 0], [0.2, 0.2]]\n",
    ).replace(
        "  - {name: people, labels: [person]}",
        "  - {name: people, labels: [person], zones: [gate], dwell_s: 5}",
    )
    settings = load_settings(_write(tmp_path, zoned), environ={})
    assert settings.cameras[0].zones[0].polygon[1] == (1.0, 0.5)
    assert settings.rules[0].zones == ["gate"] and settings.rules[0].dwell_s == 5
    with pytest.raises(
        ConfigError, match=r"cameras\[0\]\.zones\[0\]\.polygon \(line 12\).*outside the frame"
    ):
        load_settings(_write(tmp_path, zoned.replace("[1, 0.5]", "[1.5, 0.5]")), environ={})
    with pytest.raises(ConfigError, match="names zone 'yard', which no camera has"):
        load_settings(_write(tmp_path, zoned.replace("zones: [gate]", "zones: [yard]")), environ={})


def test_detection_tuning_keys(tmp_path: Path) -> None:
    tuned = BASE.replace(
        "    url: rtsp://admin:SuperSecret9@10.0.0.9/ch1\n",
        "    url: rtsp://admin:SuperSecret9@10.0.0.9/ch1\n"
        "    motion_masks: [[[0, 0], [0.2, 0], [0.2, 0.2]]]\n"
        "    thresholds: {car: {min_score: 0.7, min_area: 0.01}}\n",
    ).replace(
        "  - {name: people, labels: [person]}\n",
        "  - {name: people, labels: [person, car], label_min_score: {car: 0.8}, window: 5, min_hits: 3}\n"
        "models: {batch_timeout_s: 0.05, region_crops: false, max_crops: 3}\n",
    )
    settings = load_settings(_write(tmp_path, tuned), environ={})
    camera, rule = settings.cameras[0], settings.rules[0]
    assert camera.thresholds["car"].min_score == 0.7 and camera.motion_masks[0][1] == (0.2, 0.0)
    assert rule.label_min_score == {"car": 0.8} and rule.window == 5
    assert settings.models.batch_timeout_s == 0.05 and settings.models.region_crops is False

    wrong = tuned.replace("label_min_score: {car: 0.8}", "label_min_score: {bus: 0.8}").replace(
        "window: 5", "window: 2"
    )
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, wrong), environ={})
    assert "threshold for 'bus', which is not in its labels" in str(info.value)
    assert "window (2) must be at least min_hits (3)" in str(info.value)
    with pytest.raises(ConfigError, match=r"thresholds.car.min_scor .*unknown key"):
        load_settings(_write(tmp_path, tuned.replace("min_score: 0.7", "min_scor: 0.7")), environ={})


def test_clip_settings(tmp_path: Path) -> None:
    clips = load_settings(_write(tmp_path, BASE), environ={}).clips
    assert (clips.max_clip_s, clips.thumbnail_width) == (120.0, 320)
    env = {"GRIDWATCH_CLIPS__MAX_CLIP_S": "30", "GRIDWATCH_CLIPS__THUMBNAIL_WIDTH": "240"}
    clips = load_settings(_write(tmp_path, BASE), environ=env).clips
    assert (clips.max_clip_s, clips.thumbnail_width) == (30.0, 240)
    with pytest.raises(ConfigError, match="max_clip_s must be longer than pre_roll_s"):
        load_settings(
            _write(tmp_path, BASE),
            environ={"GRIDWATCH_CLIPS__MAX_CLIP_S": "4", "GRIDWATCH_CLIPS__PRE_ROLL_S": "5"},
        )


def test_idle_decode_refresh_and_worker_keys(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, BASE), environ={})
    assert (settings.ingest.idle_keyframe_interval_s, settings.ingest.wake_ratio) == (2.0, 3.0)
    assert (settings.models.still_refresh_max_s, settings.models.inference_workers) == (60.0, 2)
    assert settings.retention.enabled and settings.retention.default_max_age_days == 30
    env = {
        "GRIDWATCH_INGEST__WAKE_RATIO": "0",
        "GRIDWATCH_MODELS__INFERENCE_WORKERS": "1",
        "GRIDWATCH_RETENTION__MAX_TOTAL_GB": "50",
    }
    settings = load_settings(_write(tmp_path, BASE), environ=env)
    assert settings.ingest.wake_ratio == 0 and settings.models.inference_workers == 1
    assert settings.retention.max_total_gb == 50
    with pytest.raises(ConfigError, match=r"wake_ratio must be 0 \(off\) or above 1"):
        load_settings(_write(tmp_path, BASE), environ={"GRIDWATCH_INGEST__WAKE_RATIO": "0.5"})
