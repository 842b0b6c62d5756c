"""An incident's lifecycle, its legal steps written down in one place.

    new -> acknowledged -> dispatched -> on_scene -> resolved
      \\________________\\______________\\___________-> false_alarm

A step may skip ahead (a patrol member already on the spot goes from new to on_scene); it never goes back, and
resolved and false_alarm are final. Each step is recorded with who took it, when, and a note.
"""

from __future__ import annotations

STATUSES = ("new", "acknowledged", "dispatched", "on_scene", "resolved", "false_alarm")
FINAL = frozenset({"resolved", "false_alarm"})
ACTIONS = {  # action name (API, UI) -> the status it leads to
    "acknowledge": "acknowledged",
    "dispatch": "dispatched",
    "on_scene": "on_scene",
    "resolve": "resolved",
    "false_alarm": "false_alarm",
}
_ORDER = {status: i for i, status in enumerate(STATUSES[:5])}


class TransitionError(ValueError):
    """An action that the incident's current status does not allow (the API answers 409)."""


def next_status(current: str, action: str) -> str:
    """The status `action` leads to from `current`, or TransitionError saying why not."""
    if current not in STATUSES:
        raise TransitionError(f"unknown status {current!r}")
    target = ACTIONS.get(action)
    if target is None:
        raise TransitionError(f"unknown action {action!r}; actions are {', '.join(ACTIONS)}")
    if current in FINAL:
        raise TransitionError(f"the incident is already {current}; it cannot be {target} now")
    if target == "false_alarm":
        return target
    if _ORDER[target] <= _ORDER[current]:
        raise TransitionError(f"the incident is already {current}; {action} would go back")
    return target


def is_open(status: str) -> bool:
    return status not in FINAL
