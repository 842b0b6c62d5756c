"""`gridwatch users ...` on a real SQLite file named by a config, through typer's CliRunner and once as a
subprocess: adding users, passwords (prompt and --password-stdin), disabling, API tokens, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from gridwatch.auth.service import Auth
from gridwatch.cli import app
from storage.metadata import MetadataDB

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "gridwatch.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "data"),
                "teams": [{"id": "east", "name": "East patrol", "members": ["li"]}],
                "users": [{"id": "li", "name": "Li", "role": "patrol", "team": "east"}],
            }
        )
    )
    return path


def _db(config: Path) -> MetadataDB:
    return MetadataDB(f"sqlite:///{config.parent / 'data' / 'gridwatch.db'}")


def users(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(app, ["users", *args], input=input)


def _login(config: Path, user_id: str, password: str = PASSWORD) -> bool:
    db = _db(config)
    try:
        Auth(db).login(user_id, password, ip="127.0.0.1", user_agent=None)
        return True
    except Exception:
        return False
    finally:
        db.close()


def test_add_a_user_with_a_prompted_password_and_list(config: Path) -> None:
    added = users(
        "add", "ana", "--name", "Ana", "--role", "admin", str(config), input=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert added.exit_code == 0, added.output
    assert "user ana added (admin)" in added.stdout
    assert _login(config, "ana") and not _login(config, "ana", PASSWORD + "!")
    listed = users("list", str(config))
    assert listed.exit_code == 0
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert "admin" in lines["ana"] and "enabled" in lines["ana"] and "no password" not in lines["ana"]
    assert (
        "patrol" in lines["li"] and "east" in lines["li"] and "no password" in lines["li"]
    )  # from the config
    db = _db(config)
    user = db.get_user("ana")
    assert user is not None and user.password_hash is not None and user.password_hash.startswith("$argon2id$")
    assert user.password_hash not in listed.output and PASSWORD not in listed.output + added.output
    assert [a.action for a in db.list_audit(target="user:ana")] == ["user.add"]
    db.close()


def test_add_refuses_what_it_cannot_do(config: Path) -> None:
    mismatch = users(
        "add", "bo", "--name", "Bo", "--role", "operator", str(config), input=f"{'a' * 12}\n{'b' * 12}\n"
    )
    assert mismatch.exit_code != 0
    weak = users(
        "add", "bo", "--name", "Bo", "--role", "operator", "--password-stdin", str(config), input="bo\n"
    )
    assert weak.exit_code == 1 and "weak password" in weak.stderr and "at least 10" in weak.stderr
    same = users(
        "add", "bo", "--name", "Bo", "--role", "operator", "--password-stdin", str(config), input="Bo\n"
    )
    assert same.exit_code == 1
    team = users(
        "add", "bo", "--name", "Bo", "--role", "patrol", "--team", "west", "--password-stdin", str(config),
        input=f"{PASSWORD}\n",
    )  # fmt: skip
    assert team.exit_code == 1 and "unknown team 'west'" in team.stderr
    role = users(
        "add", "bo", "--name", "Bo", "--role", "root", "--password-stdin", str(config), input=f"{PASSWORD}\n"
    )
    assert role.exit_code == 1 and "unknown role" in role.stderr
    taken = users("add", "li", "--name", "Li", "--role", "patrol", "--password-stdin", str(config),
                  input=f"{PASSWORD}\n")  # fmt: skip
    assert taken.exit_code == 1 and "exists" in taken.stderr and "passwd" in taken.stderr
    bad_id = users(
        "add", "Bo Bo", "--name", "Bo", "--role", "patrol", "--password-stdin", str(config), input=PASSWORD
    )
    assert bad_id.exit_code == 1 and "user id" in bad_id.stderr
    missing = users("add", "bo", "--name", "Bo", "--role", "patrol", str(config.with_name("nope.yaml")))
    assert missing.exit_code == 2
    db = _db(config)
    assert db.get_user("bo") is None
    db.close()


def test_passwd_disable_enable(config: Path) -> None:
    unknown = users("passwd", "ghost", "--password-stdin", str(config), input=f"{PASSWORD}\n")
    assert unknown.exit_code == 1 and "unknown user 'ghost'" in unknown.stderr
    assert not _login(config, "li")  # a user of the config has no password until one is set
    done = users("passwd", "li", "--password-stdin", str(config), input=f"{PASSWORD}\n")
    assert done.exit_code == 0, done.output
    assert _login(config, "li")
    db = _db(config)
    assert len(db.list_audit(target="user:li")) == 1
    disabled = users("disable", "li", str(config))
    assert disabled.exit_code == 0 and "1 session(s) ended" in disabled.stdout
    user = db.get_user("li")
    assert user is not None and user.disabled
    assert not _login(config, "li")
    again = users("list", str(config))  # a start (here: the CLI's sync of the config) keeps the flag
    assert "disabled" in again.stdout
    assert users("enable", "li", str(config)).exit_code == 0
    assert _login(config, "li")
    assert users("disable", "ghost", str(config)).exit_code == 1
    db.close()


def test_api_tokens_from_the_cli(config: Path) -> None:
    made = users("token", "li", "--name", "cron", str(config))
    assert made.exit_code == 0, made.output
    token = made.stdout.strip()
    assert token.startswith("gwt_") and token not in made.stderr and "shown once" in made.stderr
    db = _db(config)
    principal = Auth(db).token_principal(token)
    assert principal is not None and (principal.user_id, principal.role, principal.via) == (
        "li",
        "patrol",
        "token",
    )
    [record] = db.list_api_tokens("li")
    listed = users("tokens", "li", str(config))
    assert (
        record.id in listed.stdout
        and f"gwt_{record.prefix}_..." in listed.stdout
        and token not in listed.stdout
    )
    assert users("token", "ghost", "--name", "x", str(config)).exit_code == 1
    assert users("token", "li", "--name", "x", "--expires-days", "0", str(config)).exit_code == 1
    revoked = users("revoke-token", record.id, str(config))
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    assert Auth(db).token_principal(token) is None
    assert "revoked" in users("tokens", "li", str(config)).stdout
    missing = users("revoke-token", "nope", str(config))
    assert missing.exit_code == 1 and "no API token 'nope'" in missing.stderr
    db.close()


def test_password_stdin_in_a_real_process(config: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDWATCH_")}
    done = subprocess.run(
        [sys.executable, "-m", "gridwatch.cli", "users", "add", "ana", "--name", "Ana", "--role", "admin",
         "--password-stdin", str(config)],
        input=f"{PASSWORD}\n", capture_output=True, text=True, cwd=REPO, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    assert _login(config, "ana")
