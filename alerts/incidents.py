"""Which alerts are the same incident: the same kind of thing in the same grid within a time window.

Two cameras of a grid that both see the smoke of one fire, or a person walking past three cameras of a
village lane, make one incident: one notification, the later alerts attached to it as updates. Labels are
grouped (fire and smoke are one fire; cars, trucks, buses and motorcycles are vehicles); an alert joins the
grid's open incident of its group whose last alert is at most the group's window old, else it opens a new
incident.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_GROUPS: Mapping[str, tuple[str, ...]] = {
    "fire": ("fire", "smoke"),
    "vehicle": ("car", "truck", "bus", "motorcycle", "bicycle"),
}
DEFAULT_GROUP_WINDOWS: Mapping[str, float] = {"fire": 1800.0}  # a fire burns on: smoke seen later is the same


@dataclass(frozen=True, slots=True)
class IncidentPolicy:
    window_s: float = 300.0
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_GROUPS))
    group_windows: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_GROUP_WINDOWS))

    def group_of(self, label: str) -> str:
        for group, labels in self.groups.items():
            if label in labels:
                return group
        return label

    def window_for(self, group: str) -> float:
        return self.group_windows.get(group, self.window_s)
