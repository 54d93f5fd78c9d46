"""Local search over categorical decisions, for a strategy to propose architectures near its best ones.

An architecture is a tuple of choice indices. `neighbour_of_best` walks the pool best first and returns an untried
architecture one decision away from the first member whose neighbourhood is not exhausted; at a local optimum
`kick` takes a larger random step (two or three decisions) from a pool member, as iterated local search does.
`near_best` tries the one, then the other, around the best architectures of a history.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence

Key = tuple[int, ...]


def _changed_at(key: Key, sizes: Sequence[int], t: int) -> list[Key]:
    """Every architecture that differs from `key` in decision `t` alone."""
    return [key[:t] + (value,) + key[t + 1:] for value in range(sizes[t]) if value != key[t]]


def neighbours(key: Key, sizes: Sequence[int]) -> list[Key]:
    """Every architecture that differs from `key` in exactly one decision."""
    return [near for t in range(len(sizes)) for near in _changed_at(key, sizes, t)]


def neighbours_at_two(key: Key, sizes: Sequence[int]) -> list[Key]:
    """Every architecture that differs from `key` in exactly two decisions."""
    return [far for t in range(len(sizes)) for near in _changed_at(key, sizes, t)
            for u in range(t + 1, len(sizes)) for far in _changed_at(near, sizes, u)]


def neighbour_of_best(pool: Sequence[Key], sizes: Sequence[int], known: Callable[[Key], bool],
                      randint: Callable[[int], int], radius: int = 1) -> Key | None:
    """An untried neighbour of the best pool member (`pool` best first) that still has one, chosen by `randint`;
    with `radius` 2, then an untried two-decision neighbour, best pool member first."""
    rings = [neighbours] + ([neighbours_at_two] if radius >= 2 else [])
    for ring, parent in ((ring, parent) for ring in rings for parent in pool):
        untried = [key for key in ring(parent, sizes) if not known(key)]
        if untried:
            return untried[randint(len(untried))]
    return None


def kick(pool: Sequence[Key], sizes: Sequence[int], known: Callable[[Key], bool], randint: Callable[[int], int],
         tries: int = 100) -> Key | None:
    """An untried architecture two or three random decisions away from a random pool member."""
    mutable = [t for t, n in enumerate(sizes) if n > 1]
    if not pool or not mutable:
        return None
    for _ in range(tries):
        child = list(pool[randint(len(pool))])
        for _ in range(2 + randint(2)):
            t = mutable[randint(len(mutable))]
            child[t] = (child[t] + 1 + randint(sizes[t] - 1)) % sizes[t]
        if not known(key := tuple(child)):
            return key
    return None


def best(history: Mapping[Key, float], n: int) -> list[Key]:
    """The `n` best architectures of `history`, best first."""
    return [key for key, _ in heapq.nlargest(n, history.items(), key=lambda kv: kv[1])]


def near_best(history: Mapping[Key, float], sizes: Sequence[int], known: Callable[[Key], bool],
              randint: Callable[[int], int], pool_size: int, kick_tries: int = 100, radius: int = 1) -> Key | None:
    """An untried architecture near the `pool_size` best of `history`: a neighbour (within `radius` decisions),
    else a kick."""
    pool = best(history, pool_size)
    key = neighbour_of_best(pool, sizes, known, randint, radius)
    if key is None:
        key = kick(pool, sizes, known, randint, tries=kick_tries)
    return key
