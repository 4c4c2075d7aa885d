"""ossc-run refuses bad input before COMMAND starts: each failure is its own exit code and one
line on stderr (no traceback), COMMAND never runs, nothing is deleted, no session is left in
/dev/shm. And what COMMAND's end makes of ossc-run's exit code."""

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

from support.session_helpers import wait_session_gone
from support.vllm_harness import free_port

LAUNCHER = [sys.executable, "-m", "ossc.launcher"]
# Nothing from the caller's shell may decide a case.
SCRUB = ("LD_PRELOAD", "ENABLE_CONNECTOR", "OSS_PATH", "MODEL_DIR", "OSSC_")


@pytest.fixture(scope="module")
def remote(store, bucket, tmp_path_factory):
    """A small model in the store: s3://bucket/prefix/ with a config and a 100 KB blob."""
    local = tmp_path_factory.mktemp("launcher-model")
    (local / "config.json").write_text('{"model_type": "llama"}\n')
    (local / "blob.bin").write_bytes(os.urandom(100_000))
    prefix = f"launcher-{uuid.uuid4().hex[:8]}/"
    store.upload_dir(bucket, prefix, str(local))
    return f"s3://{bucket}/{prefix}"


class Run:
    """One ossc-run invocation: valid in every respect until a case spoils one."""

    def __init__(self, store, url, tmp_path):
        self.tmp = tmp_path
        self.marker = tmp_path / "command-ran"
        self.model_dir = tmp_path / "model"
        self.config = tmp_path / "config.json"
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("AWS_", "OSS_", *SCRUB))}
        self.env.update(AWS_ACCESS_KEY_ID=store.access_key,
                        AWS_SECRET_ACCESS_KEY=store.secret_key)
        self.options = {"--oss-path": url, "--model-dir": str(self.model_dir),
                        "--endpoint": store.endpoint, "--config": str(self.config),
                        "--expire-time-sec": "1"}  # the session ends 2 s after the run
        self.command = [sys.executable, "-c", f"open({str(self.marker)!r}, 'w').close()"]

    def __call__(self, timeout=60):
        args = [*LAUNCHER]
        for k, v in self.options.items():
            args += [k] if v is True else [k, v]
        t0 = time.monotonic()
        r = subprocess.run([*args, "--", *self.command], env=self.env, capture_output=True,
                           text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=self.tmp)
        r.seconds = time.monotonic() - t0
        return r


def missing_credentials(run, store):
    del run.env["AWS_ACCESS_KEY_ID"], run.env["AWS_SECRET_ACCESS_KEY"]


def wrong_secret(run, store):
    run.env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"


def wrong_secret_vllm_command(run, store):
    """The real server command: it must not start (it would take 30 s and print plenty)."""
    wrong_secret(run, store)
    python = os.environ.get("OSSC_VLLM_PYTHON") or sys.executable
    run.command = [python, "-m", "vllm.entrypoints.openai.api_server",
                   "--model", str(run.model_dir), "--host", "127.0.0.1",
                   "--port", str(free_port()), "--enforce-eager"]


def no_such_bucket(run, store):
    run.options["--oss-path"] = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/model/"


def no_such_prefix(run, store):
    bucket = run.options["--oss-path"].split("/")[2]
    run.options["--oss-path"] = f"s3://{bucket}/no-such-prefix-{uuid.uuid4().hex[:8]}/"


def unreachable_endpoint(run, store):
    run.options.update({"--endpoint": f"http://127.0.0.1:{free_port()}", "--retries": "0",
                        "--connect-timeout-sec": "2"})


def foreign_model_dir(run, store):
    run.model_dir.mkdir()
    (run.model_dir / "mine.txt").write_text("not ossc's")


def command_not_found(run, store):
    run.command = ["ossc-no-such-command", "--flag"]


def no_oss_path(run, store):
    del run.options["--oss-path"]


# name: (setup, exit code, a word the one stderr line must hold (lowercase))
CASES = {
    "missing credentials": (missing_credentials, 4, "no credentials"),
    "wrong secret": (wrong_secret, 5, "403"),
    "wrong secret, vLLM command": (wrong_secret_vllm_command, 5, "403"),
    "no such bucket": (no_such_bucket, 6, "bucket"),
    "no such prefix": (no_such_prefix, 6, "no-such-prefix-"),
    "unreachable endpoint": (unreachable_endpoint, 7, "connect"),
    "non-empty model dir": (foreign_model_dir, 3, "not empty"),
    "command not found": (command_not_found, 127, "ossc-no-such-command"),
    "no OSS_PATH": (no_oss_path, 2, "oss_path"),
}


def snapshot(root):
    return {str(p): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_fails_before_the_command(store, remote, tmp_path, case):
    setup, code, word = CASES[case]
    run = Run(store, remote, tmp_path)
    setup(run, store)
    (tmp_path / "keep.txt").write_text("keep")
    before = snapshot(tmp_path)

    r = run()

    print(f"{case}: exit {r.returncode} in {r.seconds:.1f} s: {r.stderr.strip()}")
    lines = r.stderr.splitlines()
    assert r.returncode == code, r.stderr
    assert len(lines) == 1, r.stderr
    assert word in lines[0].lower(), lines[0]
    assert lines[0].startswith("ossc-run: "), lines[0]
    assert "Traceback" not in r.stderr + r.stdout
    assert not run.marker.exists(), "COMMAND ran"
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before, "something changed"
    # What may appear: an empty MODEL_DIR (and nothing in it); never a config file.
    assert set(after) - set(before) <= {str(run.model_dir)}, sorted(set(after) - set(before))
    assert wait_session_gone(run.model_dir)
    assert r.seconds < 30


def test_valid_input_runs_the_command(store, remote, tmp_path):
    """The control for the cases above: the same run, unspoiled, runs COMMAND and writes the
    config file."""
    run = Run(store, remote, tmp_path)
    r = run()
    assert r.returncode == 0, r.stderr
    assert run.marker.exists()
    assert run.config.exists()
    assert "Traceback" not in r.stderr
    assert wait_session_gone(run.model_dir)


def test_config_file_is_read_not_replaced(store, remote, tmp_path):
    """A config file that differs from this run's options is its lowest layer: the run starts
    (no --force) and leaves the file as it was, Aliyun's keys and numbering included."""
    run = Run(store, remote, tmp_path)
    text = ('{"logLevel": 1, "prefetch": {"vcpus": 3, "workers": 4}, "chunkSize": "1MiB",\n'
            ' "datasetConfig": {"prefetchConcurrency": 24}}\n')
    run.config.write_text(text)
    run.options.update({"--chunk-size": "64KiB", "--vcpus": "2"})
    r = run()
    assert r.returncode == 0, r.stderr
    assert run.marker.exists()
    assert run.config.read_text() == text


@pytest.mark.parametrize("script, code", [
    ("import sys; sys.exit(42)", 42),
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", 128 + signal.SIGKILL),
    ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", 128 + signal.SIGTERM),
])
def test_exit_code_is_the_commands(store, remote, tmp_path, script, code):
    run = Run(store, remote, tmp_path)
    run.command = [sys.executable, "-c", script]
    r = run()
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr
    assert wait_session_gone(run.model_dir)


def test_command_that_cannot_run_is_126(store, remote, tmp_path):
    """Found and executable, but exec fails (a missing interpreter): the shell's 126, one
    line saying why, and the session is gone."""
    script = tmp_path / "broken.sh"
    script.write_text("#!/nonexistent/interpreter\n")
    script.chmod(0o755)
    run = Run(store, remote, tmp_path)
    run.command = [str(script)]
    r = run()
    assert r.returncode == 126, r.stderr
    assert f"cannot run {script}" in r.stderr and "Traceback" not in r.stderr
    assert wait_session_gone(run.model_dir)


def test_command_without_execute_permission_is_126(store, remote, tmp_path):
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\n")
    run = Run(store, remote, tmp_path)
    run.command = [str(script)]
    r = run()
    assert r.returncode == 126, r.stderr
    assert "Permission denied" in r.stderr and "Traceback" not in r.stderr


def test_sigterm_while_checking_the_store_leaves_nothing(store, remote, tmp_path):
    """A stop signal before COMMAND starts unwinds: no session, no COMMAND, 128+15."""
    run = Run(store, remote, tmp_path)
    run.options.update({"--endpoint": f"http://127.0.0.1:{free_port()}", "--retries": "8"})
    args = [*LAUNCHER]
    for k, v in run.options.items():
        args += [k, v]
    p = subprocess.Popen([*args, "--", *run.command], env=run.env, stderr=subprocess.PIPE,
                         text=True, cwd=tmp_path)
    time.sleep(2)  # retrying an unreachable endpoint with backoff
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    assert not run.marker.exists()
    assert wait_session_gone(run.model_dir)


@pytest.mark.parametrize("command", ["ossc-run", "ossc"])
def test_missing_library_is_one_line_not_a_traceback(command, tmp_path):
    """The installed console scripts, with the engine library pointed at nothing."""
    env = dict(os.environ, OSSC_LIBRARY=str(tmp_path / "libossc.so"))
    script = shutil.which(command)
    assert script, f"{command} is not on PATH: is the package installed?"
    r = subprocess.run([script, "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 10, r.stderr
    assert r.stderr.startswith(f"{command}: libossc.so could not be loaded; tried: ")
    assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1
