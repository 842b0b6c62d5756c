"""LeaseKeeper: leases follow the assignment, never two owners, a dead worker's cameras are re-owned."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from gridwatch.cluster import ClusterKeys, LeaseKeeper, LeaseStore, WorkerIdInUse, assign

Make = Callable[..., LeaseKeeper]


def assert_single_owners(keepers: list[LeaseKeeper], store: LeaseStore) -> None:
    """No camera owned by two keepers, and what each owns is its lease in Redis, with its token."""
    seen: dict[str, str] = {}
    for keeper in keepers:
        owned = keeper.owned()
        for camera in owned:
            assert camera not in seen, f"{camera} owned by {seen.get(camera)} and {keeper.worker_id}"
            seen[camera] = keeper.worker_id
        holders = store.holders(owned)
        assert holders == {c: (keeper.worker_id, t) for c, t in owned.items()}


def test_a_single_worker_takes_every_camera_up_to_its_capacity(make_keeper: Make) -> None:
    got: list[tuple[str, int]] = []
    keeper = make_keeper("a", 5, [f"cam{i}" for i in range(8)], on_acquired=lambda c, t: got.append((c, t)))
    report = keeper.tick()
    assert report.owned == len(keeper.owned()) == 5 and report.unassigned == 3
    assert sorted(got) == sorted(keeper.owned().items())
    keeper.set_capacity(2)
    lost: list[str] = []
    keeper.on_lost = lost.append
    keeper.tick()
    assert len(keeper.owned()) == 2 and len(lost) == 3


def test_ticks_too_slow_for_the_ttls_are_refused(make_keeper: Make) -> None:
    with pytest.raises(ValueError, match="a third"):
        make_keeper("a", 1, ["cam"], lease_ttl_ms=1_000, tick_s=0.5)
    with pytest.raises(ValueError, match="a third"):
        make_keeper("a", 1, ["cam"], lease_ttl_ms=10_000, worker_ttl_ms=2_000)  # tick 1 s
    assert make_keeper("a", 1, ["cam"], lease_ttl_ms=10_000).tick_s == 1.0


def test_cameras_hand_over_when_a_worker_joins_and_come_back_when_it_leaves(
    make_keeper: Make, client: redis.Redis, keys: ClusterKeys
) -> None:
    cameras = [f"cam{i:02d}" for i in range(40)]
    store = LeaseStore(client, keys)
    lost: list[str] = []
    a = make_keeper("a", 40, cameras, on_lost=lost.append)
    a.tick()
    assert len(a.owned()) == 40
    b = make_keeper("b", 40, cameras)
    first = b.tick()  # b is live now, but a still holds everything: b waits
    assert first.acquired == () and first.waiting == first.assigned > 0
    released = a.tick()  # a sees b and gives up b's share
    assert set(released.released) == set(lost) and len(lost) == first.assigned
    assert_single_owners([a, b], store)
    b.tick()  # b takes them
    expected = assign(cameras, {"a": 40, "b": 40})
    assert a.owned().keys() == expected.cameras_of("a") and b.owned().keys() == expected.cameras_of("b")
    assert_single_owners([a, b], store)

    b.stop(release=True)  # a clean shutdown: released and deregistered at once
    a.tick()
    assert len(a.owned()) == 40


def test_cameras_added_and_removed_at_run_time_are_followed(make_keeper: Make) -> None:
    cameras = {"cam1", "cam2"}
    lost: list[str] = []
    keeper = make_keeper("a", 10, lambda: set(cameras), on_lost=lost.append)
    keeper.tick()
    cameras |= {"cam3"}
    cameras -= {"cam1"}
    report = keeper.tick()
    assert report.acquired == ("cam3",) and report.released == ("cam1",) and lost == ["cam1"]
    assert keeper.owned().keys() == {"cam2", "cam3"}


def test_a_failing_camera_list_keeps_the_leases(make_keeper: Make) -> None:
    calls = {"n": 0}

    def flaky() -> list[str]:
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("database unreachable")
        return ["cam1", "cam2"]

    keeper = make_keeper("a", 10, flaky, lease_ttl_ms=300)
    keeper.tick()
    time.sleep(0.2)
    report = keeper.tick()  # the previous list is used and the leases renewed
    assert report.cameras == 2 and report.renewed == 2 and keeper.owned().keys() == {"cam1", "cam2"}
    fresh = make_keeper("b", 10, flaky)  # no list ever: takes nothing
    assert fresh.tick().owned == 0


@pytest.mark.parametrize("seed", range(4))
def test_interleaved_ticks_never_give_a_camera_two_owners(
    make_keeper: Make, client: redis.Redis, keys: ClusterKeys, seed: int
) -> None:
    rng = random.Random(seed)
    store = LeaseStore(client, keys)
    cameras = {f"cam{i:02d}" for i in range(60)}
    keepers = [make_keeper(f"w{i}", rng.randint(20, 40), lambda: set(cameras)) for i in range(4)]
    running = keepers[:2]
    for step in range(80):
        if step % 15 == 7:  # membership and cameras change as it goes
            idle = [k for k in keepers if k not in running]
            if idle and rng.random() < 0.6:
                running.append(idle[0])
            elif len(running) > 1:
                leaving = running.pop(rng.randrange(len(running)))
                leaving.stop(release=True)
            cameras ^= {f"cam{rng.randint(0, 79):02d}" for _ in range(5)}
        rng.choice(running).tick()
        assert_single_owners(keepers, store)
    for _ in range(3):  # a few rounds with no changes: it converges to the assignment
        for keeper in running:
            keeper.tick()
    capacities = {k.worker_id: k.capacity for k in running}
    expected = assign(cameras, capacities)
    for keeper in running:
        assert keeper.owned().keys() == expected.cameras_of(keeper.worker_id)


def test_a_dead_workers_cameras_are_re_owned_within_ttl_plus_2_s(
    make_keeper: Make, client: redis.Redis, keys: ClusterKeys
) -> None:
    ttl_ms = 1_000
    store = LeaseStore(client, keys)
    cameras = [f"cam{i:02d}" for i in range(30)]
    a = make_keeper("a", 30, cameras, lease_ttl_ms=ttl_ms)
    b = make_keeper("b", 30, cameras, lease_ttl_ms=ttl_ms)
    for _ in range(3):
        a.tick()
        b.tick()
    orphans = set(b.owned())
    assert orphans and len(a.owned()) + len(orphans) == 30
    b.tick()
    died = time.monotonic()  # b stops ticking: a crash, a freeze, a cut cable
    while len(a.owned()) < 30:
        assert time.monotonic() - died < ttl_ms / 1000 + 2, "not re-owned within TTL + 2 s"
        assert not set(a.owned()) & set(b.owned()), "two owners at once"
        a.tick()
        time.sleep(a.tick_s)
    took = time.monotonic() - died
    assert b.owned() == {}  # b's own belief ran out before Redis let a have them
    assert_single_owners([a, b], store)
    assert ttl_ms / 1000 * 0.9 <= took < ttl_ms / 1000 + 2


def test_the_runner_threads_keep_one_owner_per_camera_through_joins_deaths_and_changes(
    make_keeper: Make, client: redis.Redis, keys: ClusterKeys, until: Callable[..., Any]
) -> None:
    """Three keepers on their own threads (TTL 1 s). Each records when it believed it owned a camera
    (from on_acquired to on_lost, or to its local deadline for the one that dies): those intervals must
    never overlap for a camera."""
    ttl_ms = 1_000
    cameras = {f"cam{i:02d}" for i in range(24)}
    lock = threading.Lock()
    opened: dict[tuple[str, str], float] = {}
    intervals: dict[str, list[tuple[float, float, str]]] = {}

    def callbacks(worker: str) -> dict[str, Any]:
        def acquired(camera: str, token: int) -> None:
            with lock:
                opened[(worker, camera)] = time.monotonic()

        def lost(camera: str) -> None:
            with lock:
                start = opened.pop((worker, camera))
                intervals.setdefault(camera, []).append((start, time.monotonic(), worker))

        return {"on_acquired": acquired, "on_lost": lost}

    keepers = {
        w: make_keeper(w, 30, lambda: set(cameras), lease_ttl_ms=ttl_ms, **callbacks(w)) for w in "abc"
    }

    def owners() -> dict[str, str]:
        return {c: w for w, k in keepers.items() for c in k.owned()}

    keepers["a"].start()
    until("a owns every camera", lambda: len(keepers["a"].owned()) == 24, timeout=3)
    keepers["b"].start()
    keepers["c"].start()
    until("the three share the cameras", lambda: all(len(k.owned()) >= 4 for k in keepers.values()), 4)
    with pytest.raises(WorkerIdInUse):
        make_keeper("b", 1, ["cam00"]).start()

    cameras |= {"cam90", "cam91"}
    cameras -= {"cam00"}
    until("new cameras are owned", lambda: {"cam90", "cam91"} <= owners().keys(), timeout=3)
    until("a removed camera is given up", lambda: "cam00" not in owners(), timeout=3)

    dead = keepers["c"]
    orphans = set(dead.owned())
    dead.stop(release=False)  # its thread stops: no more heartbeats, renewals or callbacks
    died = time.monotonic()
    until_deadline = dead.held_until()
    with lock:
        for camera in orphans:
            start = opened.pop(("c", camera))
            intervals.setdefault(camera, []).append((start, until_deadline[camera], "c"))
    until(
        "the dead worker's cameras are re-owned by the others",
        lambda: orphans <= {c for w in "ab" for c in keepers[w].owned()},
        timeout=ttl_ms / 1000 + 2,
    )
    assert time.monotonic() - died < ttl_ms / 1000 + 2
    keepers["b"].stop(release=True)  # clean shutdown: a takes over at once, without waiting for a TTL
    until("a owns everything after b's clean shutdown", lambda: len(keepers["a"].owned()) == 25, 1.5)
    keepers["a"].stop(release=True)
    assert LeaseStore(client, keys).holders(cameras) == {}

    for camera, spans in intervals.items():
        spans.sort()
        for (_, end, first), (start, _, second) in itertools.pairwise(spans):
            assert end <= start, f"{camera}: {first} and {second} both owned it"


def test_leases_lapse_at_their_deadline_while_redis_does_not_answer(
    tmp_path: Any, until: Callable[..., Any]
) -> None:
    """A frozen Redis (SIGSTOP): the tick hangs on its socket, and the deadline thread still reports every
    lease lost before it can expire on the server; once Redis answers again they are taken back."""
    from gridwatch.services import RedisServer

    with RedisServer(tmp_path / "frozen") as server:
        client = redis.Redis.from_url(server.url, socket_timeout=5)
        lost: list[tuple[str, float]] = []
        keeper = LeaseKeeper(
            client, "a", 10, lambda: ["cam1", "cam2"], lease_ttl_ms=600,
            on_lost=lambda c: lost.append((c, time.monotonic())),
        )  # fmt: skip
        keeper.start()
        until("a owns both cameras", lambda: len(keeper.owned()) == 2, timeout=2)
        server.pause()
        frozen = time.monotonic()
        until("both leases are reported lost", lambda: len(lost) == 2, timeout=2)
        assert all(at - frozen < 0.6 for _, at in lost)  # before the server could hand them to anyone
        assert keeper.owned() == {}
        server.resume()
        until("taken back once Redis answers", lambda: len(keeper.owned()) == 2, timeout=8)
        keeper.stop()
        client.close()


def test_a_cold_start_waits_for_the_live_workers_to_settle(make_keeper: Make) -> None:
    """A fleet starting: workers appearing one after the other take nothing until no one has joined for
    `settle_s`; then each takes its own share at once, and no camera is started twice. One that keeps seeing
    joins takes cameras after `settle_max_s` anyway."""
    now = [0.0]
    cameras = [f"cam{i:02d}" for i in range(30)]
    acquired: list[str] = []

    def keeper(worker_id: str) -> LeaseKeeper:
        return make_keeper(worker_id, 30, cameras, settle_s=3.0, clock=lambda: now[0],
                           on_acquired=lambda c, _t: acquired.append(c))  # fmt: skip

    first = keeper("a")
    first.tick()
    assert not first.settled and first.owned() == {}
    others = []
    for worker_id in ("b", "c"):  # a joiner each second: the live set keeps changing
        now[0] += 1.0
        others.append(keeper(worker_id))
        for k in (first, *others):
            k.tick()
        assert not any(k.owned() for k in (first, *others))
    fleet = [first, *others]
    for _ in range(4):  # c saw all three at 2 s, a and b at their ticks of 3 s: settled at 5 and 6 s
        now[0] += 1.0
        for k in fleet:
            k.tick()
    assert all(k.settled for k in fleet)
    for k in fleet:  # the keepers that settled first had taken their share before the others' tick
        k.tick()
    expected = assign(frozenset(cameras), {k.worker_id: 30 for k in fleet})
    assert all(k.owned().keys() == expected.cameras_of(k.worker_id) for k in fleet)
    assert sorted(acquired) == sorted(cameras)  # each camera started once: no handover on the way

    busy = keeper("d")  # joins while the fleet keeps changing: settles after settle_max_s (10 x 3 s)
    busy.tick()
    for second in range(1, 31):
        now[0] += 1.0
        if second % 2 == 0:
            make_keeper(f"joiner-{second}", 0, cameras, clock=lambda: now[0]).membership.register()
        busy.tick()
        assert busy.settled == (second >= 30), second
    with pytest.raises(ValueError, match="settle_max_s"):
        make_keeper("e", 1, cameras, settle_s=5, settle_max_s=1)


def test_a_settling_newcomer_leaves_no_camera_unowned(make_keeper: Make) -> None:
    """A worker joining a running cluster: while it settles (its capacity published negated) the others keep
    and renew the cameras the assignment gives it; once settled it takes them over within two ticks."""
    now = [0.0]
    cameras = [f"cam{i:02d}" for i in range(30)]
    running = [make_keeper(w, 30, cameras, clock=lambda: now[0]) for w in ("a", "b")]
    for k in running:
        k.tick()
    assert sum(len(k.owned()) for k in running) == 30
    newcomer = make_keeper("n", 30, cameras, settle_s=3.0, clock=lambda: now[0])
    everyone = [*running, newcomer]
    for second in range(4):
        for k in everyone:
            k.tick()
        if not newcomer.settled:
            assert newcomer.owned() == {}
            owned = [c for k in running for c in k.owned()]
            assert sorted(owned) == cameras, second  # none unowned, none twice
        now[0] += 1.0
    assert newcomer.settled
    for _ in range(2):
        for k in everyone:
            k.tick()
        now[0] += 1.0
    expected = assign(frozenset(cameras), {k.worker_id: 30 for k in everyone})
    assert newcomer.owned().keys() == expected.cameras_of("n") and len(newcomer.owned()) >= 5
    assert all(k.owned().keys() == expected.cameras_of(k.worker_id) for k in everyone)
