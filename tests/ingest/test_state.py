from __future__ import annotations

import pytest

from ingest.health import RateMeter
from ingest.state import LEGAL_TRANSITIONS, IllegalTransition, StateChange, StateMachine, StreamState

S = StreamState


def test_every_state_has_its_transitions_written_down() -> None:
    assert set(LEGAL_TRANSITIONS) == set(StreamState)
    assert LEGAL_TRANSITIONS[S.STOPPED] == frozenset()
    for state, targets in LEGAL_TRANSITIONS.items():
        assert state not in targets
        if state != S.STOPPED:
            assert S.STOPPED in targets
    # reconnect attempts do not leave OFFLINE: there is no way back to CONNECTING
    assert all(S.CONNECTING not in targets for targets in LEGAL_TRANSITIONS.values())


def test_legal_path_is_published_and_repeats_are_not() -> None:
    changes: list[StateChange] = []
    machine = StateMachine("cam1", "detect", changes.append)
    for state in (S.ONLINE, S.ONLINE, S.STALLED, S.ONLINE, S.OFFLINE, S.OFFLINE, S.AUTH_FAILED, S.ONLINE):
        machine.move(state, reason="why")
    machine.move(S.STOPPED)
    assert [(c.old, c.new) for c in changes] == [
        (S.CONNECTING, S.ONLINE),
        (S.ONLINE, S.STALLED),
        (S.STALLED, S.ONLINE),
        (S.ONLINE, S.OFFLINE),
        (S.OFFLINE, S.AUTH_FAILED),
        (S.AUTH_FAILED, S.ONLINE),
        (S.ONLINE, S.STOPPED),
    ]
    assert all(c.camera_id == "cam1" and c.stream == "detect" and c.at > 0 for c in changes)


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        ((), S.STALLED),  # connecting -> stalled: never had packets
        ((S.OFFLINE,), S.STALLED),
        ((S.STOPPED,), S.ONLINE),
        ((S.ONLINE, S.STALLED), S.AUTH_FAILED),
    ],
)
def test_illegal_transitions_raise(path: tuple[StreamState, ...], illegal: StreamState) -> None:
    machine = StateMachine("cam1")
    for state in path:
        machine.move(state)
    with pytest.raises(IllegalTransition, match="not a legal transition"):
        machine.move(illegal)


def test_a_failing_listener_does_not_break_the_stream() -> None:
    def boom(_change: StateChange) -> None:
        raise RuntimeError("listener down")

    machine = StateMachine("cam1", listener=boom)
    machine.move(S.ONLINE)
    assert machine.state == S.ONLINE


def test_rate_meter_window() -> None:
    meter = RateMeter(window_s=2.0)
    for i in range(20):
        meter.add(1000, now=100.0 + i * 0.1)  # 10 packets/s of 1000 bytes over 2 s
    rate, size = meter.rate(now=102.0)
    assert rate == pytest.approx(9.5, abs=0.6) and size == pytest.approx(9500, abs=600)
    assert meter.rate(now=110.0) == (0.0, 0.0)
