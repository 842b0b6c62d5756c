"""Which live worker owns which camera: rendezvous (highest-random-weight) hashing with bounded loads.

Every worker computes the assignment on its own from the same inputs (the enabled cameras and the live
workers with their capacities), so there is no coordinator: the result depends only on those inputs.

1. Each camera ranks the workers by a weight hashed from (camera, worker): with equal capacities by the
   64-bit hash itself, otherwise weighted rendezvous, `capacity / -ln(u)` with u the hash in (0, 1), so a
   worker is first choice for a share of the cameras proportional to its capacity.
2. Each worker gets a bound `ceil(balance * s)`, never more than its capacity, where `s` is its share:
   `cameras * capacity / total capacity`. The bounds add up to at least the cameras. The busiest worker
   has at most `balance` times the mean plus one camera (10,000 on 100 workers: 110, exactly 1.1). When
   the cameras outnumber the total capacity the bound is the capacity, and the cameras left over are
   unassigned.
3. Cameras are taken in a fixed order (by their hash) and each goes to the first worker of its ranking
   that is below its bound.

Plain rendezvous hashing moves only the cameras of a worker that leaves (and about 1/N of them when one
joins) but balances badly: on 100 workers the busiest gets about 1.3 times the mean. The bound caps that
at `balance` (1.1) and costs some movement: a camera that goes to a new worker can push a later camera
out of it, and so on until one lands on a worker below its bound. A leave or join moves about 1.2-1.4/N
of the cameras instead of 1/N, as long as the bounds leave slack. That is why the bound is rounded up,
never down: with 15 cameras a worker, `floor(1.1 * 14.5)` = 15 would leave 3 % slack and one death would
move 40 times its own cameras. When the bound is the capacity and the fleet is nearly full, movement
grows the same way (docs/SCALING.md).

The hashes are BLAKE2b and integer mixing (no per-process salt), so every machine computes the same thing.
With unequal capacities the ranking compares floats from `numpy.log`; two weights within an ulp of each
other could order differently on machines whose numpy differs, which for 10,000 x 100 weights is about
one chance in 10^10 per computation.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from types import MappingProxyType

import numpy as np

DEFAULT_BALANCE = 1.1

_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)


@dataclass(frozen=True, slots=True)
class Assignment:
    """Owner per camera. `unassigned`: cameras no live worker has room for."""

    owners: Mapping[str, str]
    by_worker: Mapping[str, frozenset[str]]
    unassigned: frozenset[str]

    @classmethod
    def empty(cls) -> Assignment:
        return cls(MappingProxyType({}), MappingProxyType({}), frozenset())

    def cameras_of(self, worker_id: str) -> frozenset[str]:
        return self.by_worker.get(worker_id, frozenset())

    def loads(self) -> dict[str, int]:
        return {worker: len(cameras) for worker, cameras in self.by_worker.items()}

    def balance(self) -> float:
        """Busiest worker's cameras over the mean (1.0: perfectly even; 0.0 with no cameras)."""
        loads = self.loads()
        if not loads or not self.owners:
            return 0.0
        return max(loads.values()) / (len(self.owners) / len(loads))


def assign(
    cameras: Iterable[str], workers: Mapping[str, int], balance: float = DEFAULT_BALANCE
) -> Assignment:
    """Assign `cameras` to `workers` ({worker id: capacity in cameras}; workers with capacity < 1 get none).

    Pure and deterministic; the last few results are cached, as every tick of every keeper in a process
    asks the same question until the cameras or the workers change.
    """
    if balance < 1.0:
        raise ValueError(f"balance must be at least 1.0, not {balance}")
    # the cache key is built at C speed: every keeper asks this every tick, with hundreds of workers
    return _assign(frozenset(cameras), frozenset(workers.items()), balance)


def moved(before: Assignment, after: Assignment) -> int:
    """Cameras present in both whose owner differs (unassigned counts as an owner)."""
    cameras = (before.owners.keys() | before.unassigned) & (after.owners.keys() | after.unassigned)
    return sum(1 for c in cameras if before.owners.get(c) != after.owners.get(c))


def _hash64(value: str) -> int:
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "little")


def _mix(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (wrapping uint64 arithmetic)."""
    x = x ^ (x >> _S33)
    x = x * _M1
    x = x ^ (x >> _S33)
    x = x * _M2
    return x ^ (x >> _S33)


def _bounds(total: int, capacities: list[int], balance: float) -> list[int]:
    capacity = sum(capacities)
    if total >= capacity:
        return list(capacities)
    factor = Fraction(repr(balance))  # exact: 1.1 is 11/10, not 1.100000000000000088...
    return [min(cap, math.ceil(factor * Fraction(total * cap, capacity))) for cap in capacities]


@lru_cache(maxsize=8)
def _assign(cameras: frozenset[str], workers: frozenset[tuple[str, int]], balance: float) -> Assignment:
    capacity_of = {w: int(c) for w, c in workers if int(c) > 0}
    worker_ids = sorted(capacity_of)
    if not cameras or not worker_ids:
        return Assignment(MappingProxyType({}), MappingProxyType({}), frozenset(cameras))
    capacities = [capacity_of[w] for w in worker_ids]
    camera_ids = sorted(cameras)
    camera_hash = np.array([_hash64(c) for c in camera_ids], dtype=np.uint64)
    worker_hash = _mix(np.array([_hash64(w) for w in worker_ids], dtype=np.uint64))
    weight = _mix(camera_hash[:, None] ^ worker_hash[None, :])  # cameras x workers
    # Highest first: the integer weights themselves with equal capacities (exact), else weighted scores.
    # Most cameras get their first choice (argmax); a camera whose first choice is full ranks its whole row
    # (the same order a stable sort of every row would give, without sorting 10,000 rows).
    key: np.ndarray = ~weight
    if len(set(capacities)) > 1:
        u = ((weight >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
        key = -(np.asarray(capacities, dtype=np.float64)[None, :] / -np.log(u))
    first_choice: list[int] = np.argmin(key, axis=1).tolist()
    bound = _bounds(len(camera_ids), capacities, balance)
    load = [0] * len(worker_ids)
    room = sum(bound)
    owner_index: dict[int, int] = {}
    for i in np.argsort(camera_hash, kind="stable").tolist():
        if room == 0:
            break
        chosen = first_choice[i]
        if load[chosen] >= bound[chosen]:
            ranking = np.argsort(key[i], kind="stable").tolist()
            chosen = next(j for j in ranking if load[j] < bound[j])
        load[chosen] += 1
        room -= 1
        owner_index[i] = chosen
    owners = {camera_ids[i]: worker_ids[j] for i, j in owner_index.items()}
    grouped: dict[str, set[str]] = {w: set() for w in worker_ids}
    for camera, worker in owners.items():
        grouped[worker].add(camera)
    return Assignment(
        owners=MappingProxyType(owners),
        by_worker=MappingProxyType({w: frozenset(c) for w, c in grouped.items()}),
        unassigned=frozenset(cameras - owners.keys()),
    )
