"""Run a command; report the peak resident set of each of its processes and of all together.

    python benchmarks/peak_rss.py --json out.json -- python -m sed_model.compare ...

Every 0.25 s the command's process tree is read from ``/proc``: each process' ``VmHWM``
(its own peak, kept by the kernel) and the sum of their ``VmRSS`` (the peak of that sum is
the "all processes" figure). Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(parent, []).append(int(entry))
    return tree


def _tree(root: int) -> list[int]:
    children, found, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _read(pid: int) -> tuple[int, int, str] | None:
    """(VmHWM, VmRSS) in KiB and the command line of ``pid``; None once it has gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            values = dict(line.split(":", 1) for line in status if ":" in line)
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            command = cmdline.read().replace(b"\0", b" ").decode(errors="replace").strip()
        return int(values["VmHWM"].split()[0]), int(values["VmRSS"].split()[0]), command
    except (OSError, KeyError, ValueError, IndexError):
        return None


def measure(command: list[str], interval: float = 0.25) -> dict:
    started = time.perf_counter()
    process = subprocess.Popen(command)
    peaks: dict[int, dict] = {}
    peak_total = 0
    while process.poll() is None:
        total = 0
        for pid in _tree(process.pid):
            read = _read(pid)
            if read is None:
                continue
            hwm, rss, cmd = read
            total += rss
            entry = peaks.setdefault(pid, {"pid": pid, "command": cmd[:160], "peak_rss_kib": 0})
            entry["peak_rss_kib"] = max(entry["peak_rss_kib"], hwm)
        peak_total = max(peak_total, total)
        time.sleep(interval)
    processes = sorted(peaks.values(), key=lambda p: -p["peak_rss_kib"])
    return {"command": command, "returncode": process.returncode,
            "wall_s": time.perf_counter() - started,
            "peak_total_rss_mib": peak_total / 1024,
            "processes": [{**p, "peak_rss_mib": p.pop("peak_rss_kib") / 1024} for p in processes]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    report = measure(command)
    for p in report["processes"][:4]:
        print(f"peak RSS {p['peak_rss_mib']:7.0f} MiB  pid {p['pid']}  {p['command'][:90]}")
    print(f"peak RSS of all processes together: {report['peak_total_rss_mib']:.0f} MiB; "
          f"{report['wall_s']:.0f} s; exit {report['returncode']}")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return report["returncode"]


if __name__ == "__main__":
    sys.exit(main())
