"""The deployment files are valid: docker-compose checks the compose file offline (no engine needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _compose_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker-compose", "-f", str(path), "config", "-q"], capture_output=True, text=True, timeout=60
    )


def test_compose_file_is_valid() -> None:
    result = _compose_config(REPO / "docker" / "compose.yaml")
    assert result.returncode == 0, result.stderr


def test_the_check_catches_a_broken_compose_file(tmp_path: Path) -> None:
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    compose["services"]["gridwatch"]["restart_policy_typo"] = "always"
    broken = tmp_path / "docker"
    broken.mkdir()
    (broken / "compose.yaml").write_text(yaml.safe_dump(compose))
    result = _compose_config(broken / "compose.yaml")
    assert result.returncode != 0
    assert "restart_policy_typo" in result.stderr


def test_dockerfile_prepares_models_and_runs_as_non_root() -> None:
    text = (REPO / "docker" / "Dockerfile").read_text()
    assert "gridwatch models prepare" in text
    assert "\nUSER gridwatch" in text
