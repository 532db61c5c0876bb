"""What every part of the benchmark shares: paths, units, the error type, logging and
running commands."""

import os
import shlex
import subprocess
import sys
import time

REPO = os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SCRIPTS = os.path.join(REPO, "scripts")
RAW_CLIENT = os.path.join(SCRIPTS, "raw_qmp_copy.py")
sys.path.insert(0, SCRIPTS)
import raw_qmp_copy  # noqa: E402  (its QMP class serves the bench's own admin monitor)

GIB = 1 << 30
MIB = 1 << 20
CHUNK = 256 * MIB  # qemu-io write/read request size when filling and checking images
COMMAND_TIMEOUT = 900  # seconds any timed copy may take before the run is declared failed


class BenchError(Exception):
    pass


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(argv, check=True, **kwargs):
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)
    if check and result.returncode != 0:
        raise BenchError(f"{shlex.join(argv)} exited {result.returncode}: {result.stdout.strip()[-2000:]}")
    return result.stdout


def capture(argv, default="?"):
    try:
        return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              timeout=30).stdout.strip() or default
    except (OSError, subprocess.SubprocessError):
        return default


def size_text(size):
    return f"{size // GIB} GiB" if size % GIB == 0 else f"{size // MIB} MiB"
