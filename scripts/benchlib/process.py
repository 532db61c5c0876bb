"""Timing the copy command's process (wall clock, CPU) and reading its output."""

import os
import subprocess
import time

from .common import COMMAND_TIMEOUT


def timed(argv, out_path, env=None, timeout=COMMAND_TIMEOUT, on_start=None):
    """Runs argv with stdout+stderr to out_path. Returns (seconds, exit code, rusage of
    that process alone, wall-clock spawn time); os.wait4 gives the child's own rusage."""
    with open(out_path, "w") as out:
        spawn_wall = time.time()
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env)
        if on_start:
            on_start(process, started)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                process.kill()
                os.wait4(process.pid, 0)
                process.returncode = -9
                return time.perf_counter() - started, "timeout", None, spawn_wall
            time.sleep(0.001)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
    return seconds, process.returncode, usage, spawn_wall


def running(pid):
    """Whether pid runs (not a zombie), without reaping it: timed() must be the one to wait4."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def cpu_seconds(usage):
    return usage.ru_utime + usage.ru_stime


def read_output(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""
