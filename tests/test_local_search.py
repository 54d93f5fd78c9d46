"""strategies/local_search.py: the neighbourhoods a strategy's mutants are drawn from."""

from __future__ import annotations

import itertools
import random

from strategies.local_search import best, near_best, neighbour_of_best, neighbours, neighbours_at_two

SIZES = [3, 2, 4, 2]


def distance(a: tuple, b: tuple) -> int:
    return sum(x != y for x, y in zip(a, b))


def test_the_rings_are_every_architecture_one_and_two_decisions_away():
    key = (1, 0, 3, 1)
    space = list(itertools.product(*(range(n) for n in SIZES)))
    assert sorted(neighbours(key, SIZES)) == sorted(k for k in space if distance(k, key) == 1)
    ring = neighbours_at_two(key, SIZES)
    assert len(ring) == len(set(ring)) and sorted(ring) == sorted(k for k in space if distance(k, key) == 2)


def test_radius_two_walks_the_second_ring_of_the_best_before_kicking():
    key, randint = (0, 0, 0, 0), random.Random(0).randrange
    known = {key, *neighbours(key, SIZES)}  # the first ring is spent
    assert neighbour_of_best([key], SIZES, known.__contains__, randint) is None  # radius 1: nothing left
    seen = set()
    for _ in range(len(neighbours_at_two(key, SIZES))):
        child = neighbour_of_best([key], SIZES, (known | seen).__contains__, randint, radius=2)
        assert child is not None and distance(child, key) == 2
        seen.add(child)
    assert neighbour_of_best([key], SIZES, (known | seen).__contains__, randint, radius=2) is None


def test_near_best_starts_from_the_best_of_the_history():
    history = {(0, 0, 0, 0): 0.1, (2, 1, 3, 1): 0.9, (1, 1, 1, 1): 0.5}
    assert best(history, 2) == [(2, 1, 3, 1), (1, 1, 1, 1)]
    child = near_best(history, SIZES, history.__contains__, random.Random(1).randrange, pool_size=1)
    assert distance(child, (2, 1, 3, 1)) == 1
