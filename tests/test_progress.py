"""Progress as users see it: on a terminal (a pseudo-terminal of 120 and of 60 columns, as tmux
gives), `ossc get` and `ossc-run` redraw one bar in place with "\\r", never wider than the
terminal; through pipes (CI logs) no bar at all. The downloads go through the fault proxy,
whose stalls make them last long enough for several redraws."""

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import uuid

import pytest

CHUNK = 64 << 10
FILES = 3
FILE_SIZE = 4 * CHUNK
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# What only a bar draws: tqdm's "NN%|".
BAR = re.compile(r"\d+%\|")


@pytest.fixture(scope="module")
def remote(store, bucket):
    """FILES large files (above smallFileSize as the tests set it) under a fresh prefix."""
    prefix = f"progress-{uuid.uuid4().hex[:8]}/"
    s3 = store.s3()
    for i in range(FILES):
        s3.put_object(Bucket=bucket, Key=f"{prefix}model-{i:05d}.bin",
                      Body=os.urandom(FILE_SIZE))
    return prefix


@pytest.fixture
def slow_proxy(proxy, remote):
    """Every ranged GET of the prefix waits 0.3 s before its headers: with one transfer in
    flight, 12 chunks take 3.6 s or more, and the commands redraw every 0.2–0.25 s."""
    proxy.add_fault("stall", key=remote, seconds=0.3, ranged_only=True, times=None)
    return proxy


def environment(store, proxy) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "OSS_", "OSSC_", "LD_PRELOAD", "ENABLE_CONNECTOR",
                                "MODEL_DIR", "COLUMNS", "LINES"))}
    for name in ("OSSC_LIBRARY",):  # the library under test, where the run names one
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(AWS_ACCESS_KEY_ID=store.access_key, AWS_SECRET_ACCESS_KEY=store.secret_key,
               AWS_ENDPOINT_URL=proxy.endpoint, OSSC_CONFIG="", TERM="xterm")
    return env


def run_in_terminal(args, env, columns, timeout=120):
    """args with stdin, stdout and stderr on a pseudo-terminal `columns` wide (its window size
    and COLUMNS): the exit code and everything it wrote, "\\r\\n" read back as "\\n"."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave,
                            env=dict(env, COLUMNS=str(columns), LINES="24"),
                            start_new_session=True)
    os.close(slave)
    out = bytearray()
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                proc.kill()
                pytest.fail(f"no output for {timeout} s: {bytes(out)!r}")
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # EIO: the last writer closed the terminal
                break
            if not data:
                break
            out += data
    finally:
        os.close(master)
    return proc.wait(timeout), out.decode("utf-8", "replace").replace("\r\n", "\n")


def width(text: str) -> int:
    return len(ANSI.sub("", text))


def bar_draws(output: str, columns: int) -> list[str]:
    """The bar's draws, after checking that they all share one line and fit the width."""
    lines = [line for line in output.split("\n") if BAR.search(line)]
    assert len(lines) == 1, f"the bar took {len(lines)} lines:\n{output}"
    draws = [d for d in lines[0].split("\r") if d]
    too_wide = [d for d in draws if width(d) > columns]
    assert not too_wide, f"{len(too_wide)} draws wider than {columns}: {too_wide[:2]}"
    return draws


@pytest.mark.parametrize("columns", [120, 60])
def test_get_redraws_one_line_at_the_terminal_width(store, bucket, remote, slow_proxy,
                                                    tmp_path, columns):
    env = environment(store, slow_proxy)
    code, out = run_in_terminal(
        [sys.executable, "-m", "ossc", "get", f"s3://{bucket}/{remote}", str(tmp_path / "out"),
         "--chunk-size", "64KiB", "--vcpus", "1", "--workers", "1"], env, columns)
    assert code == 0, out
    draws = bar_draws(out, columns)
    assert len(draws) >= 5, out  # redrawn in place, not once at the end
    assert BAR.search(draws[-1]).group() == "100%|"
    assert all(width(seg) <= columns for line in out.split("\n") for seg in line.split("\r"))
    assert out.rstrip("\n").split("\n")[-1].startswith(f"fetched {FILES} objects")
    # the current file's name only where it leaves the bar room
    assert (columns >= 120) == any("model-0000" in d for d in draws)


@pytest.mark.parametrize("columns", [120, 60])
def test_run_redraws_one_line_at_the_terminal_width(store, bucket, remote, slow_proxy,
                                                    tmp_path, columns):
    env = environment(store, slow_proxy)
    model_dir = tmp_path / "model"
    # COMMAND waits for the prefetch's end (the session's state), so the summary comes.
    wait = ("import sys, time\nfrom ossc.native import sessions\n"
            "while sessions(sys.argv[1])[0]['state'] == 'fetching':\n    time.sleep(0.05)\n")
    code, out = run_in_terminal(
        [sys.executable, "-m", "ossc.launcher", "--oss-path", f"s3://{bucket}/{remote}",
         "--model-dir", str(model_dir), "--config", "", "--expire-time-sec", "1",
         "--small-file-size", "0", "--chunk-size", "64KiB", "--vcpus", "1", "--workers", "1",
         "--", sys.executable, "-c", wait, str(model_dir)], env, columns)
    assert code == 0, out
    draws = bar_draws(out, columns)
    assert len(draws) >= 5, out
    assert BAR.search(draws[-1]).group() == "100%|"
    # The summary on a line of its own, right below the bar's.
    lines = out.split("\n")
    below = lines[[i for i, line in enumerate(lines) if BAR.search(line)][0] + 1]
    assert below.startswith(f"ossc-run: prefetched {FILES} files"), out


def test_pipes_get_no_bar(store, bucket, remote, proxy, tmp_path):
    """Through pipes (CI logs): no "\\r", no bar; a short download prints only its summary."""
    r = subprocess.run([sys.executable, "-m", "ossc", "get", f"s3://{bucket}/{remote}",
                        str(tmp_path / "out")], env=environment(store, proxy),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stdout + r.stderr and not BAR.search(r.stdout + r.stderr)
    assert r.stderr == ""
    assert r.stdout.startswith(f"fetched {FILES} objects")
