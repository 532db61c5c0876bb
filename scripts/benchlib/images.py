"""Source images: filling them with a byte pattern, checking copies, fresh copies per run."""

import json
import os

from .common import BenchError, CHUNK, run, size_text


def fill_pattern_image(path, size, pattern):
    run(["qemu-img", "create", "-q", "-f", "qcow2", path, str(size)])
    writes = []
    for offset in range(0, size, CHUNK):
        writes += ["-c", f"write -P {pattern} {offset} {min(CHUNK, size - offset)}"]
    run(["qemu-io", "-f", "qcow2"] + writes + [path])
    info = json.loads(run(["qemu-img", "info", "-f", "qcow2", "--output=json", path]))
    allocated = sum(int(e["length"]) for e in json.loads(run(["qemu-img", "map", "-f", "qcow2", "--output=json", path]))
                    if e.get("data"))
    if allocated != size:
        raise BenchError(f"{path}: {allocated} bytes allocated, expected {size}")
    return info


def pattern_pristines(directory, size, patterns):
    """One fully written pristine image per pattern (`pristineN.qcow2` in `directory`),
    the sources a scenario copies afresh for every run (`fresh_run`)."""
    pristines = []
    for number, pattern in enumerate(patterns):
        pristine = os.path.join(directory, f"pristine{number}.qcow2")
        fill_pattern_image(pristine, size, pattern)
        pristines.append(pristine)
    return pristines


def verify_pattern_image(path, size, pattern, fmt="qcow2"):
    """Offline check (QEMU stopped): every byte of `path` is `pattern`, no backing file."""
    reads = []
    for offset in range(0, size, CHUNK):
        reads += ["-c", f"read -P {pattern} {offset} {min(CHUNK, size - offset)}"]
    output = run(["qemu-io", "-r", "-f", fmt] + reads + [path])
    chunks = (size + CHUNK - 1) // CHUNK
    if "Pattern verification failed" in output or output.count("read ") < chunks:
        raise BenchError(f"{path} does not hold pattern {pattern} over {size} bytes:\n{output[-1000:]}")
    info = json.loads(run(["qemu-img", "info", "-f", fmt, "--output=json", path]))
    if "backing-filename" in info:
        raise BenchError(f"{path} still has backing file {info['backing-filename']}")
    return f"pattern {pattern} over all {size_text(size)} intact, no backing file"


def copy_pristine(pristine, target):
    run(["cp", "--reflink=auto", pristine, target])


def fresh_run(run_dir, pristines):
    """A new `run_dir` holding a fresh copy of each pristine image (`src<n>.qcow2`, written
    back to disk so its writeback stays out of the timed window); returns the sources and
    where each is to be copied (`dst<n>.qcow2`, not created)."""
    os.makedirs(run_dir)
    sources = [os.path.join(run_dir, f"src{n}.qcow2") for n in range(len(pristines))]
    destinations = [os.path.join(run_dir, f"dst{n}.qcow2") for n in range(len(pristines))]
    for pristine, source in zip(pristines, sources):
        copy_pristine(pristine, source)
    os.sync()
    return sources, destinations
