"""Fixtures of the API's tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from storage.metadata import MetadataDB

RoleHeaders = dict[str, dict[str, str]]


@pytest.fixture
def role_headers(api_token: Callable[..., str]) -> Callable[[MetadataDB], RoleHeaders]:
    """`role_headers(db)`: Authorization headers of an admin ("ada"), an operator ("otto") and a patrol
    member of team-a ("pat"), as {"admin": ..., "operator": ..., "patrol_a": ...} (users made if missing)."""

    def make(db: MetadataDB) -> RoleHeaders:
        return {
            "admin": {"Authorization": api_token(db, "ada", "admin")},
            "operator": {"Authorization": api_token(db, "otto", "operator")},
            "patrol_a": {"Authorization": api_token(db, "pat", "patrol", "team-a")},
        }

    return make
