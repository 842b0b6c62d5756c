"""`gridwatch users ...`: users, passwords and API tokens in the config's database.

Each command migrates the database first and writes the config's villages, teams, grids and users into it
(as every start does), so a user of the config can be given a password before the first start. Passwords
come from a prompt (asked twice) or, for scripts, from the first line of standard input with
`--password-stdin`; never from an argument, which other users of the machine can see in `ps`.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from gridwatch.auth.service import Auth

users_app = typer.Typer(
    help="Users, passwords and API tokens (in the config's database).", no_args_is_help=True
)

ConfigArg = Annotated[Path, typer.Argument(help="YAML config file", envvar="GRIDWATCH_CONFIG")]
UserArg = Annotated[str, typer.Argument(help="User id (what the user logs in with)")]
PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of standard input")
]
USER_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
ACTOR = "cli"


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def _auth(config: Path) -> Iterator[Auth]:
    from gridwatch.alerting import sync_organisation
    from gridwatch.auth.service import Auth
    from gridwatch.settings import ConfigError, load_settings
    from storage.metadata import MetadataDB

    try:
        settings = load_settings(config)
    except ConfigError as exc:
        _fail(str(exc), 2)
    db = MetadataDB(settings.database_url())
    try:
        db.migrate()
        sync_organisation(settings, db)
        yield Auth(db)
    finally:
        db.close()


def _password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            _fail("--password-stdin: standard input is empty")
        return line.rstrip("\r\n")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


def _hash(auth: Auth, password: str, user_id: str) -> str:
    from gridwatch.auth.passwords import WeakPassword

    try:
        return auth.hash_new_password(password, user_id)
    except WeakPassword as exc:
        _fail(f"weak password: {exc}")


def _known_user(auth: Auth, user_id: str) -> None:
    if auth.db.get_user(user_id) is None:
        _fail(f"unknown user {user_id!r} (`gridwatch users list CONFIG` shows the users)")


@users_app.command("add")
def add(
    user_id: UserArg,
    config: ConfigArg,
    name: Annotated[str, typer.Option(help="Display name")],
    role: Annotated[str, typer.Option(help="admin, operator or patrol")],
    team: Annotated[str | None, typer.Option(help="Team id (patrol members)")] = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """Add a user with a password."""
    from storage.metadata import ROLES, UserRecord

    if not USER_ID.fullmatch(user_id):
        _fail("a user id is 1 to 63 of a-z, 0-9, '_' and '-', starting with a letter or digit")
    if role not in ROLES:
        _fail(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    if not name.strip():
        _fail("--name must not be empty")
    with _auth(config) as auth:
        if auth.db.get_user(user_id) is not None:
            _fail(f"user {user_id!r} exists; set its password with `gridwatch users passwd {user_id} CONFIG`")
        if team is not None and team not in {t.id for t in auth.db.list_teams()}:
            _fail(f"unknown team {team!r}: add it to the config's teams first")
        password_hash = _hash(auth, _password(password_stdin), user_id)
        try:
            auth.db.create_user(UserRecord(user_id, name, role, team, password_hash))  # type: ignore[arg-type]
        except ValueError as exc:
            _fail(str(exc))
        auth.db.add_audit(ACTOR, "user.add", f"user:{user_id}", {"role": role, "team": team})
    typer.echo(f"user {user_id} added ({role}{f', team {team}' if team else ''})")


@users_app.command("list")
def list_users(config: ConfigArg) -> None:
    """List the users: id, name, role, team, whether enabled, whether a password is set, live tokens."""
    with _auth(config) as auth:
        now = auth.now()
        live: dict[str, int] = {}
        for t in auth.db.list_api_tokens():
            if t.revoked_at is None and (t.expires_at is None or t.expires_at > now):
                live[t.user_id] = live.get(t.user_id, 0) + 1
        rows = [
            (
                u.id,
                u.name,
                u.role,
                u.team_id or "-",
                "disabled" if u.disabled else "enabled",
                "password" if u.password_hash else "no password",
                f"{live.get(u.id, 0)} token(s)",
            )
            for u in auth.db.list_users()
        ]
    if not rows:
        typer.echo("no users")
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@users_app.command("passwd")
def passwd(user_id: UserArg, config: ConfigArg, password_stdin: PasswordStdin = False) -> None:
    """Set a user's password (the user's sessions end; its API tokens stay)."""
    with _auth(config) as auth:
        _known_user(auth, user_id)
        password_hash = _hash(auth, _password(password_stdin), user_id)
        auth.db.set_password_hash(user_id, password_hash)
        ended = auth.db.delete_sessions_of_user(user_id)
        auth.db.add_audit(ACTOR, "user.passwd", f"user:{user_id}", {"sessions_ended": ended})
    typer.echo(f"password of {user_id} set; {ended} session(s) ended")


def _set_disabled(user_id: str, config: Path, disabled: bool) -> None:
    with _auth(config) as auth:
        _known_user(auth, user_id)
        auth.db.set_user_disabled(user_id, disabled)
        ended = auth.db.delete_sessions_of_user(user_id) if disabled else 0
        action = "user.disable" if disabled else "user.enable"
        auth.db.add_audit(ACTOR, action, f"user:{user_id}", {"sessions_ended": ended})
        admins = auth.db.count_admins()
    if disabled:
        typer.echo(f"user {user_id} disabled; {ended} session(s) ended, its API tokens stop working")
        if admins == 0:
            typer.echo("note: no admin can log in now; the next start opens first-run setup", err=True)
    else:
        typer.echo(f"user {user_id} enabled")


@users_app.command("disable")
def disable(user_id: UserArg, config: ConfigArg) -> None:
    """Disable a user: no login, its sessions end, its API tokens stop working."""
    _set_disabled(user_id, config, True)


@users_app.command("enable")
def enable(user_id: UserArg, config: ConfigArg) -> None:
    """Enable a disabled user again."""
    _set_disabled(user_id, config, False)


@users_app.command("token")
def token(
    user_id: UserArg,
    config: ConfigArg,
    name: Annotated[str, typer.Option(help="What the token is for")],
    expires_days: Annotated[int | None, typer.Option(help="Days until it expires (default: never)")] = None,
) -> None:
    """Make an API token for a user and print it (this once) on standard output."""
    with _auth(config) as auth:
        _known_user(auth, user_id)
        try:
            secret, record = auth.issue_api_token(user_id, name, expires_days=expires_days)
        except ValueError as exc:
            _fail(str(exc))
        auth.db.add_audit(
            ACTOR,
            "api_token.create",
            f"api_token:{record.id}",
            {"name": record.name, "prefix": record.prefix},
        )
    until = f"until {record.expires_at:%Y-%m-%d %H:%M} UTC" if record.expires_at else "no expiry"
    typer.echo(
        f"API token {record.id} ({record.name}) for {user_id}, {until}; shown once, keep it secret:", err=True
    )
    typer.echo(secret)


@users_app.command("tokens")
def tokens(user_id: UserArg, config: ConfigArg) -> None:
    """List a user's API tokens (id, prefix, name, state)."""
    with _auth(config) as auth:
        _known_user(auth, user_id)
        now = auth.now()
        found = auth.db.list_api_tokens(user_id)
    for t in found:
        if t.revoked_at is not None:
            state = f"revoked {t.revoked_at:%Y-%m-%d}"
        elif t.expires_at is not None and t.expires_at <= now:
            state = f"expired {t.expires_at:%Y-%m-%d}"
        else:
            state = f"last used {t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never used"
        typer.echo(f"{t.id}  gwt_{t.prefix}_...  {t.name}  {state}")
    if not found:
        typer.echo(f"{user_id} has no API tokens")


@users_app.command("revoke-token")
def revoke_token(
    token_id: Annotated[str, typer.Argument(help="Token id (see `users tokens`)")], config: ConfigArg
) -> None:
    """Revoke an API token."""
    with _auth(config) as auth:
        record = auth.db.revoke_api_token(token_id)
        if record is None:
            _fail(f"no API token {token_id!r} (`gridwatch users tokens USER_ID CONFIG` lists them)")
        auth.db.add_audit(ACTOR, "api_token.revoke", f"api_token:{record.id}", {"prefix": record.prefix})
    typer.echo(f"API token {record.id} ({record.name}) of {record.user_id} revoked")
