#!/usr/bin/env python3
"""Where a command's threads wait: a poor man's off-CPU profile from /proc.

    thread_states.py CMD ARGS...

runs CMD and, while it lives, samples every 2 ms each of its threads' state and kernel wait
channel (/proc/PID/task/TID/stat and wchan: R running or runnable, S futex_do_wait a lock or
condition variable, D lock_mm_and_find_vma the mmap lock, ...). At the end it appends to
$THREAD_STATES_OUT a tally (average threads per thread name, state and wait channel) and, for
the threads named $THREAD_STATES_NAME (default ossc-fetch, the fetch engine's), the top states
in each 0.1 s since the start. Without THREAD_STATES_OUT it only runs CMD, so it can stand in
for a command in a benchmark and sample only the variants that set it, e.g.

    bench_fetch.py --ossc-cmd "python3 scripts/thread_states.py python3 -m ossc" \\
        --variant probe:THREAD_STATES_OUT=/tmp/states.txt ...

Sampling costs one core; compare timings only with runs that did not sample. Linux only. """
import collections
import os
import subprocess
import sys
import time

SAMPLE_S = 0.002


def sample(pid: int):
    """[(thread name, state, wait channel)] of the process's threads now."""
    seen = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return seen
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                st = f.read()
            with open(f"/proc/{pid}/task/{tid}/wchan") as f:
                wchan = f.read().strip() or "0"
        except OSError:  # the thread ended meanwhile
            continue
        name = st[st.index("(") + 1:st.rindex(")")]
        seen.append((name, st[st.rindex(")") + 2], wchan))
    return seen


def report(cmd, rc, wall, n, tally, by_tenth) -> str:
    lines = [f"== {' '.join(cmd)}: exit {rc}, {wall:.2f} s, {n} samples"]
    lines += [f"{c / n:7.2f} threads  {name:16s} {state} {wchan}"
              for (name, state, wchan), c in tally.most_common(25)]
    lines.append(f"-- {os.environ.get('THREAD_STATES_NAME', 'ossc-fetch')} threads per 0.1 s: "
                 "top states")
    for tenth in sorted(by_tenth):
        states = by_tenth[tenth]
        total = sum(states.values())
        top = ", ".join(f"{w} {c / total:.0%}" for w, c in states.most_common(4))
        lines.append(f"{tenth / 10:4.1f}s {top}")
    return "\n".join(lines) + "\n"


def main(cmd) -> int:
    out = os.environ.get("THREAD_STATES_OUT")
    if not cmd:
        sys.exit("usage: thread_states.py CMD ARGS...")
    if not out:
        os.execvp(cmd[0], cmd)
    watched = os.environ.get("THREAD_STATES_NAME", "ossc-fetch")
    t0 = time.monotonic()
    child = subprocess.Popen(cmd)
    tally = collections.Counter()
    by_tenth = collections.defaultdict(collections.Counter)
    n = 0
    while child.poll() is None:
        tenth = int((time.monotonic() - t0) * 10)
        seen = sample(child.pid)
        n += bool(seen)
        for name, state, wchan in seen:
            tally[(name, state, wchan)] += 1
            if name == watched:
                by_tenth[tenth]["run" if state == "R" else wchan] += 1
        time.sleep(SAMPLE_S)
    rc = child.wait()
    with open(out, "a") as f:
        f.write(report(cmd, rc, time.monotonic() - t0, max(n, 1), tally, by_tenth))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
