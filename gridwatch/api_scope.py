"""What a caller may see: admins and operators every grid, a patrol member the grids of their team.

Every route that hands out an object (a camera, an alert and its clip, snapshot and thumbnail, an incident,
a live-feed event) checks it against the caller's scope, and answers 404 for an object outside it, the same
as for one that does not exist: a patrol member learns nothing about other grids.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException

from gridwatch.api_state import State
from gridwatch.auth.deps import CurrentPrincipal, require_roles
from gridwatch.auth.principal import Principal

EVERY_GRID_ROLES = frozenset({"admin", "operator"})


@dataclass(frozen=True, slots=True)
class Scope:
    principal: Principal
    grids: frozenset[str] | None  # None: every grid

    def sees(self, grid: str) -> bool:
        return self.grids is None or grid in self.grids

    def within(self, wanted: Collection[str] | None) -> list[str] | None:
        """A query's grid filter narrowed to the scope (None: no filter at all)."""
        if self.grids is None:
            return list(wanted) if wanted is not None else None
        return sorted(self.grids if wanted is None else self.grids & set(wanted))

    def check(self, grid: str, what: str) -> None:
        if not self.sees(grid):
            raise HTTPException(status_code=404, detail=f"{what} not found")


def scope_of(principal: CurrentPrincipal, s: State) -> Scope:
    if principal.role in EVERY_GRID_ROLES:
        return Scope(principal, None)
    if principal.team_id is None:
        return Scope(principal, frozenset())
    return Scope(principal, frozenset(g.id for g in s.db.list_grids(team_id=principal.team_id)))


ViewScope = Annotated[Scope, Depends(scope_of)]
STAFF = Depends(require_roles("admin", "operator"))  # route dependency: admins and operators only
Admin = Annotated[Principal, Depends(require_roles("admin"))]
