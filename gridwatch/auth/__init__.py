"""Authentication: passwords (argon2id), login sessions with CSRF tokens, API tokens, first-run setup.

- `principal`: `Principal`, who a request is from.
- `deps`: the FastAPI dependencies routes use: `current_principal` / `CurrentPrincipal`,
  `optional_principal` / `OptionalPrincipal`, `require_roles(...)`; CSRF and origin checks for cookies.
- `login`: the routes under /api/v1 (login, logout, session, tokens, setup) and `install_auth(app, state)`.
- `service`: `Auth`, the logic behind them, over the metadata database (`storage.metadata.auth`).
- `passwords`, `tokens`, `ratelimit`: hashing and policy, token formats, failed-login limits.
- `cli`: `gridwatch users ...`.

Kept light: importing the package imports only `Principal`.
"""

from gridwatch.auth.principal import Principal

__all__ = ["Principal"]
