"""Cluster lease simulation: N cameras shared by W workers through Redis leases (gridwatch.cluster), the
lease logic only (no video), against a real Redis (an embedded valkey-server).

    .venv/bin/python bench/lease_sim.py --cameras 10000 --workers 100

All W `LeaseKeeper`s live in this process and share one connection. The simulation runs in real time:
every `--tick-s` one round ticks each live keeper once, in a shuffled order (as independent machines
would), and sleeps out the rest of the tick. If a round takes longer than a tick the report says so (the
ticks are then that much further apart than in production). Phases:

1. start: every worker registers, then the rounds run until each keeper holds exactly its assignment;
   with `--start-over-s S` the workers join one by one over S seconds instead (a fleet starting), and
   `--settle-s` is each keeper's cold-start hold-back (0: none); `--only-start` stops after this phase. The
   phase counts the leases acquired: a camera acquired more than once was started on one worker and handed
   over to another on the way;
2. steady: `--steady-s` seconds of rounds; Redis INFO commandstats/cpu/stats deltas give the commands
   per second (the commands inside the Lua scripts count too), Redis CPU and network the cluster needs;
3. death: one worker stops ticking (no release: a crash); rounds until its cameras are owned again and
   every keeper holds its new assignment;
4. join: a new worker registers; rounds until converged.

Every round checks that no camera has two owners (each keeper's `owned()`), and at each phase's end that
what the keepers believe is what Redis holds. Then the assignment alone over `--seeds` random deaths and
joins: cameras moved against the ideal 1/N. `--json PATH` writes everything measured.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

# Run as a script, bench/ comes first on sys.path, and bench/ingest.py would shadow the `ingest` package.
BENCH = Path(__file__).resolve().parent
sys.path[:] = [str(BENCH.parent), *(p for p in sys.path if Path(p or ".").resolve() != BENCH)]

from gridwatch.cluster import LeaseKeeper, LeaseStore, assign, moved  # noqa: E402
from gridwatch.services import RedisServer  # noqa: E402

HARNESS_COMMANDS = {"info", "mget", "ping", "hello", "client|setinfo", "config|get"}  # not the keepers'


@dataclass
class RoundStats:
    round: int
    at_s: float  # since the simulation started
    took_s: float  # the round's own time (all keeper ticks)
    live: int
    owned: int  # cameras held by some keeper
    converged: bool  # every live keeper holds exactly its assignment


@dataclass
class Phase:
    name: str
    rounds: int = 0
    seconds: float = 0.0
    converged: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def progress(line: str) -> None:
    print(line, flush=True)


class Simulation:
    def __init__(self, args: argparse.Namespace, client: redis.Redis) -> None:
        self.args = args
        self.client = client
        self.rng = random.Random(args.seed)
        self.cameras = frozenset(f"cam-{i:05d}" for i in range(args.cameras))
        self.store = LeaseStore(client)
        self.keepers: dict[str, LeaseKeeper] = {}
        self.alive: list[str] = []
        self.started = time.monotonic()
        self.rounds: list[RoundStats] = []
        self.unowned_since: dict[str, float] = {}
        self.max_gap_s = 0.0  # longest a camera went without an owner (sampled each round)
        self.tick_times: list[float] = []
        self.acquisitions = 0  # leases acquired by all keepers (a camera started on a worker)

    def add_worker(self, worker_id: str) -> LeaseKeeper:
        keeper = LeaseKeeper(
            self.client, worker_id, self.args.capacity, lambda: self.cameras,
            lease_ttl_ms=self.args.ttl_ms, tick_s=self.args.tick_s, settle_s=self.args.settle_s,
        )  # fmt: skip
        keeper.membership.register()
        self.keepers[worker_id] = keeper
        self.alive.append(worker_id)
        return keeper

    def kill(self, worker_id: str) -> None:
        self.alive.remove(worker_id)  # it just stops ticking: no release, no deregistration

    def expected(self) -> Any:
        return assign(self.cameras, {w: self.keepers[w].capacity for w in self.alive})

    def owners(self, live_only: bool = False) -> dict[str, str]:
        """Who believes it owns what: every keeper (the dead one until its local deadlines pass; it fails if
        two believe they own the same camera), or only the live ones (who do the work)."""
        found: dict[str, str] = {}
        for worker, keeper in self.keepers.items():
            if live_only and worker not in self.alive:
                continue
            for camera in keeper.owned():
                if camera in found:
                    raise AssertionError(f"{camera} owned by both {found[camera]} and {worker}")
                found[camera] = worker
        return found

    def check_redis(self) -> None:
        holders = self.store.holders(self.cameras)
        for camera, worker in self.owners().items():
            if holders.get(camera, ("", 0))[0] != worker:
                raise AssertionError(f"{worker} believes it owns {camera}, Redis says {holders.get(camera)}")

    def round(self) -> RoundStats:
        begun = time.monotonic()
        order = self.alive[:]
        self.rng.shuffle(order)
        for worker in order:
            t0 = time.perf_counter()
            self.acquisitions += len(self.keepers[worker].tick().acquired)
            self.tick_times.append(time.perf_counter() - t0)
        took = time.monotonic() - begun
        self.owners()  # the check: no camera owned twice
        owners = self.owners(live_only=True)
        now = time.monotonic()
        for camera in self.cameras:
            if camera in owners:
                since = self.unowned_since.pop(camera, None)
                if since is not None:
                    self.max_gap_s = max(self.max_gap_s, now - since)
            else:
                self.unowned_since.setdefault(camera, now)
        expected = self.expected()
        converged = all(self.keepers[w].owned().keys() == expected.cameras_of(w) for w in self.alive) and len(
            owners
        ) == len(expected.owners)
        stats = RoundStats(
            len(self.rounds) + 1, now - self.started, took, len(self.alive), len(owners), converged
        )
        self.rounds.append(stats)
        return stats

    def run(self, phase: Phase, done: Callable[[RoundStats], bool], limit_s: float, every: int = 1) -> Phase:
        """Rounds, one per tick, until `done` (or `limit_s`); progress every `every` rounds."""
        began = time.monotonic()
        while True:
            t0 = time.monotonic()
            stats = self.round()
            phase.rounds += 1
            if phase.rounds % every == 0 or done(stats):
                progress(
                    f"  [{stats.at_s:6.1f} s] {phase.name:6s} round {phase.rounds:3d}: {stats.live} workers, "
                    f"{stats.owned:,}/{len(self.cameras):,} cameras owned, "
                    f"{'converged' if stats.converged else 'moving'}, round took {stats.took_s * 1000:.0f} ms"
                )
            if done(stats):
                phase.converged = True
                break
            if time.monotonic() - began > limit_s:
                progress(f"  {phase.name}: not done after {limit_s:.0f} s")
                break
            time.sleep(max(0.0, self.args.tick_s - (time.monotonic() - t0)))
        phase.seconds = time.monotonic() - began
        return phase


def redis_counters(client: redis.Redis) -> dict[str, float]:
    stats = client.info("commandstats")
    out = {
        f"cmd:{name.removeprefix('cmdstat_')}": float(v["calls"])
        for name, v in stats.items()
        if name.removeprefix("cmdstat_") not in HARNESS_COMMANDS
    }
    cpu = client.info("cpu")
    net = client.info("stats")
    out["cpu_s"] = float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])
    out["net_in_bytes"] = float(net["total_net_input_bytes"])
    out["net_out_bytes"] = float(net["total_net_output_bytes"])
    return out


def assignment_movement(cameras: frozenset[str], workers: int, capacity: int, seeds: int) -> dict[str, Any]:
    fleet = {f"worker-{i:03d}": capacity for i in range(workers)}
    t0 = time.perf_counter()
    base = assign(cameras, fleet)
    cold_s = time.perf_counter() - t0
    deaths, joins, own, share = [], [], [], []
    for seed in range(seeds):
        rng = random.Random(seed)
        gone = rng.choice(sorted(fleet))
        after = assign(cameras, {w: c for w, c in fleet.items() if w != gone})
        deaths.append(moved(base, after))
        own.append(len(base.cameras_of(gone)))
        joined = assign(cameras, {**fleet, f"joiner-{seed}": capacity})
        joins.append(moved(base, joined))
        share.append(len(joined.cameras_of(f"joiner-{seed}")))
    ideal = len(cameras) / workers
    return {
        "balance_max_over_mean": round(base.balance(), 4),
        "min_load": min(base.loads().values()),
        "max_load": max(base.loads().values()),
        "assign_cold_ms": round(cold_s * 1000, 1),
        "death_moved_mean": statistics.mean(deaths),
        "death_moved_range": [min(deaths), max(deaths)],
        "death_own_cameras_mean": statistics.mean(own),
        "join_moved_mean": statistics.mean(joins),
        "join_moved_range": [min(joins), max(joins)],
        "join_share_mean": statistics.mean(share),
        "ideal_1_over_n": ideal,
        "death_moved_over_ideal": round(statistics.mean(deaths) / ideal, 3),
        "join_moved_over_ideal": round(statistics.mean(joins) / (len(cameras) / (workers + 1)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cameras", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--capacity", type=int, default=0, help="per worker (default 1.5x the mean load)")
    parser.add_argument("--ttl-ms", type=int, default=10_000, help="lease and heartbeat TTL")
    parser.add_argument("--tick-s", type=float, default=None, help="default min(TTL/3, 1 s), as the keeper")
    parser.add_argument(
        "--steady-s", type=float, default=30.0, help="steady-state window for the Redis counts"
    )
    parser.add_argument(
        "--seeds", type=int, default=20, help="random deaths and joins for the assignment stats"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start-over-s", type=float, default=0.0, help="workers join over this long")
    parser.add_argument("--settle-s", type=float, default=3.0, help="cold start hold-back (join_settle_s)")
    parser.add_argument("--only-start", action="store_true", help="stop after the start phase")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    args.capacity = args.capacity or math.ceil(1.5 * args.cameras / args.workers)
    args.tick_s = args.tick_s if args.tick_s is not None else min(args.ttl_ms / 3000, 1.0)
    ttl_s = args.ttl_ms / 1000
    results: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    }

    progress(
        f"assignment alone: {args.cameras:,} cameras on {args.workers} workers, {args.seeds} deaths and joins"
    )
    results["assignment"] = assignment_movement(
        frozenset(f"cam-{i:05d}" for i in range(args.cameras)), args.workers, args.capacity, args.seeds
    )
    progress("  " + json.dumps(results["assignment"]))

    with tempfile.TemporaryDirectory(prefix="gw-lease-sim-") as tmp, RedisServer(Path(tmp)) as server:
        client = redis.Redis.from_url(server.url, socket_timeout=10)
        progress(f"redis: {server.binary} on {server.url}")
        memory_before = int(client.info("memory")["used_memory"])
        sim = Simulation(args, client)
        progress(
            f"start: {args.workers} workers of capacity {args.capacity}, "
            f"lease TTL {ttl_s:g} s, tick {args.tick_s:g} s"
        )
        joins = sorted(sim.rng.uniform(0, args.start_over_s) for _ in range(args.workers))
        joined = [0]

        def join_due() -> None:
            """Workers due by now join (all at once without --start-over-s; the first one at once)."""
            while joined[0] < args.workers and (
                joined[0] == 0 or joins[joined[0]] <= time.monotonic() - sim.started
            ):
                sim.add_worker(f"worker-{joined[0]:03d}")
                joined[0] += 1

        def start_done(stats: RoundStats) -> bool:
            """Done once all workers joined and hold their assignment."""
            done = joined[0] == args.workers and stats.converged
            join_due()
            return done

        sim.started = time.monotonic()
        join_due()
        start = sim.run(Phase("start"), start_done, limit_s=args.start_over_s + 120)
        sim.check_redis()
        loads = [len(k.owned()) for k in sim.keepers.values()]
        start.extra = {
            "balance_max_over_mean": round(max(loads) / statistics.mean(loads), 4),
            "min_load": min(loads),
            "max_load": max(loads),
            "start_over_s": args.start_over_s,
            "settle_s": args.settle_s,
            "leases_acquired": sim.acquisitions,
            "acquired_per_camera": round(sim.acquisitions / args.cameras, 3),
            "converged_s": round(time.monotonic() - sim.started, 2),
        }
        progress(
            f"  balance of the leases held: max/mean {start.extra['balance_max_over_mean']}, "
            f"loads {min(loads)}-{max(loads)}; {sim.acquisitions:,} leases acquired for "
            f"{args.cameras:,} cameras ({start.extra['acquired_per_camera']} per camera), converged after "
            f"{start.extra['converged_s']} s"
        )
        if args.only_start:
            results["phases"] = [asdict(start)]
            client.close()
            if args.json:
                args.json.write_text(json.dumps(results, indent=2))
                progress(f"wrote {args.json}")
            return

        progress(f"steady: {args.steady_s:g} s of rounds, counting Redis commands")
        sim.tick_times.clear()
        before, t0 = redis_counters(client), time.monotonic()
        steady = sim.run(
            Phase("steady"), lambda s: time.monotonic() - t0 >= args.steady_s, args.steady_s + 60, every=5
        )
        after, window = redis_counters(client), time.monotonic() - t0
        delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
        per_s = {
            k.removeprefix("cmd:"): round(v / window, 1)
            for k, v in sorted(delta.items())
            if k.startswith("cmd:") and v
        }
        steady_rounds = sim.rounds[-steady.rounds :]
        steady.extra = {
            "window_s": round(window, 2),
            "commands_per_s": round(sum(v for k, v in delta.items() if k.startswith("cmd:")) / window, 1),
            "script_calls_per_s": per_s.get("evalsha", 0.0),
            "by_command_per_s": per_s,
            "redis_cpu_cores": round(delta["cpu_s"] / window, 4),
            "net_in_kb_per_s": round(delta["net_in_bytes"] / window / 1024, 1),
            "net_out_kb_per_s": round(delta["net_out_bytes"] / window / 1024, 1),
            "round_ms_mean": round(statistics.mean(r.took_s for r in steady_rounds) * 1000, 1),
            "round_ms_max": round(max(r.took_s for r in steady_rounds) * 1000, 1),
            "keeper_tick_ms_mean": round(statistics.mean(sim.tick_times) * 1000, 3),
            "all_converged": all(r.converged for r in steady_rounds),
            "redis_used_memory_mb": round(int(client.info("memory")["used_memory"]) / 2**20, 2),
            "redis_memory_for_cluster_mb": round(
                (int(client.info("memory")["used_memory"]) - memory_before) / 2**20, 2
            ),
            "keys": int(client.dbsize()),
        }
        progress("  " + json.dumps(steady.extra))

        victim = sim.rng.choice(sim.alive)
        orphans = set(sim.keepers[victim].owned())
        before_assignment = sim.expected()
        before_owners = sim.owners(live_only=True)
        progress(f"death: {victim} stops ticking, holding {len(orphans)} cameras")
        sim.kill(victim)
        died, first_round = time.monotonic(), len(sim.rounds)
        reowned: dict[str, float] = {}
        sim.max_gap_s = 0.0
        for camera in orphans:  # no one works on them from now on
            sim.unowned_since[camera] = died

        def death_done(stats: RoundStats) -> bool:
            if "at" not in reowned:
                owners = sim.owners(live_only=True)
                if orphans <= owners.keys():
                    reowned["at"], reowned["round"] = time.monotonic() - died, float(stats.round)
            return stats.converged

        death = sim.run(Phase("death"), death_done, limit_s=3 * ttl_s + 30)
        sim.check_redis()
        after_owners = sim.owners(live_only=True)
        death.extra = {
            "victim_cameras": len(orphans),
            "cameras_moved": sum(1 for c in sim.cameras if before_owners.get(c) != after_owners.get(c)),
            "assignment_moved": moved(before_assignment, sim.expected()),
            "ideal_1_over_n": round(args.cameras / args.workers, 1),
            "reowned_s": round(reowned.get("at", float("nan")), 2),
            "reowned_rounds": int(reowned.get("round", first_round)) - first_round,
            "converged_rounds": death.rounds,
            "converged_s": round(death.seconds, 2),
            "longest_camera_gap_s": round(sim.max_gap_s, 2),
            "bound_ttl_plus_2_s": ttl_s + 2,
        }
        progress("  " + json.dumps(death.extra))

        newcomer = f"worker-{args.workers:03d}"
        before_assignment = sim.expected()
        before_owners = sim.owners(live_only=True)
        progress(f"join: {newcomer} registers")
        sim.max_gap_s = 0.0
        sim.add_worker(newcomer)
        join = sim.run(Phase("join"), lambda s: s.converged, limit_s=3 * ttl_s + 30)
        sim.check_redis()
        after_owners = sim.owners(live_only=True)
        join.extra = {
            "newcomer_cameras": len(sim.keepers[newcomer].owned()),
            "cameras_moved": sum(1 for c in sim.cameras if before_owners.get(c) != after_owners.get(c)),
            "assignment_moved": moved(before_assignment, sim.expected()),
            "ideal_1_over_n": round(args.cameras / len(sim.alive), 1),
            "converged_s": round(join.seconds, 2),
            "converged_rounds": join.rounds,
            "longest_camera_gap_s": round(sim.max_gap_s, 2),
        }
        progress("  " + json.dumps(join.extra))
        results["phases"] = [asdict(p) for p in (start, steady, death, join)]
        results["redis"] = {"binary": server.binary, "version": client.info("server").get("redis_version")}
        slow = [r for r in sim.rounds if r.took_s > args.tick_s]
        results["rounds_longer_than_a_tick"] = len(slow)
        results["rounds"] = len(sim.rounds)
        client.close()

    progress(
        f"done: {results['rounds']} rounds, {results['rounds_longer_than_a_tick']} took longer than a tick "
        f"({'real time' if not results['rounds_longer_than_a_tick'] else 'those ticks were late'})"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        progress(f"wrote {args.json}")


if __name__ == "__main__":
    main()
