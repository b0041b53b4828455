"""The benchmarks' one timing rule: interleaved runs, median per figure."""

import statistics
from typing import Callable, Hashable


def interleaved_medians(runs: dict[Hashable, Callable[[], float]], repeats: int) -> dict[Hashable, float]:
    """Each run's median over ``repeats`` rounds, every round calling each run once in turn (so that drift of
    a busy machine hits all alike). A run returns the seconds it measured; warm them up before."""
    times = {key: [] for key in runs}
    for _ in range(repeats):
        for key, run in runs.items():
            times[key].append(run())
    return {key: statistics.median(values) for key, values in times.items()}
