"""Process trees, CPU time and RSS, read from /proc."""

from __future__ import annotations

import os
import time


def children_of() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def process_tree(pid: int) -> list[int]:
    tree = children_of()
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo.extend(tree.get(current, []))
    return pids


def rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` and all its descendants, in KB."""
    total = 0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


TICKS = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """User and system CPU time of every process on the machine (all CPUs), from /proc/stat.

    Interrupt and softirq time (where the kernel moves loopback traffic) is left out,
    as it is out of the processes' own figures.
    """
    with open("/proc/stat") as stat:
        user, nice, system = (int(value) for value in stat.readline().split()[1:4])
    return (user + nice + system) / TICKS


def foreign_cpu_share(seconds: float = 1.0) -> float:
    """How busy the machine is without us, in cores (mean over ``seconds``)."""
    mine = os.getpid()
    before_all, before_mine = machine_busy_seconds(), cpu_seconds(mine)
    time.sleep(seconds)
    after_all, after_mine = machine_busy_seconds(), cpu_seconds(mine)
    return max(0.0, (after_all - before_all) - (after_mine - before_mine)) / seconds


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its descendants."""
    total = 0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def affinity(pid: int) -> dict[str, list[int]]:
    """The CPUs each process and thread of ``pid``'s tree may run on, as ``{"CPUS": [pids]}``
    (one key when all share one set); processes gone meanwhile are left out."""
    sets: dict[str, list[int]] = {}
    for member in process_tree(pid):
        try:
            tids = [int(tid) for tid in os.listdir(f"/proc/{member}/task")]
        except OSError:
            continue
        for tid in tids:
            try:
                cpus = os.sched_getaffinity(tid)
            except OSError:
                continue
            sets.setdefault(",".join(str(cpu) for cpu in sorted(cpus)), []).append(tid)
    return sets
