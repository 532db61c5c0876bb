"""The run's context: work directories, settings from the environment, the livecopy and
livecopy-benchkit binaries, and the summary rows for the top of the report."""

import os
import shlex
import shutil
import subprocess
import sys
import time

from .common import BenchError, MIB, REPO, capture, log


class Context:
    """What every scenario shares: paths, the livecopy binary, settings."""

    def __init__(self, pairs_override):
        self.work = os.path.abspath(os.environ.get("BENCH_DIR") or os.path.join(REPO, "bench-work"))
        self.output = os.path.abspath(os.environ.get("BENCH_OUTPUT") or os.path.join(REPO, "BENCHMARKS.md"))
        self.pairs_override = pairs_override
        self.warmups = int(os.environ.get("BENCH_WARMUP", "1"))
        self.build_config = os.environ.get("BENCH_BUILD", "release")
        self.scratch = os.environ.get("BENCH_SCRATCH")
        self.fast = os.path.abspath(os.environ.get("BENCH_FAST_DIR") or "/dev/shm/livecopy-bench")
        self.python = os.path.realpath(sys.executable)  # the interpreter itself, not a pyenv shim
        self.livecopy = None
        self.livecopy_origin = None
        self.benchkit = None
        self.summary = []  # (figure, measure, value, target, verdict) rows for the top of the report

    def note(self, figure, measure, value, target="—", met=None):
        verdict = "—" if met is None else ("met" if met else "**missed**")
        self.summary.append((figure, measure, value, target, verdict))

    def prepare(self, needs_benchkit=True):
        os.makedirs(self.work, exist_ok=True)
        # Unix socket paths are limited to 107 bytes.
        if len(os.path.join(self.work, "one-disk-uncapped", "p00-livecopy", "vm.admin.qmp")) > 100:
            raise BenchError(f"BENCH_DIR {self.work} is too long for QMP unix socket paths")
        for tool in ("qemu-system-x86_64", "qemu-img", "qemu-io"):
            if not shutil.which(tool):
                raise BenchError(f"{tool} is missing; run scripts/install-deps")
        self.livecopy, self.livecopy_origin = self._binary("livecopy", "BENCH_LIVECOPY")
        if needs_benchkit:  # only store-at-scale and recovery-at-scale use it
            self.benchkit, self.benchkit_origin = self._binary("livecopy-benchkit", "BENCH_BENCHKIT")

    def _binary(self, product, variable):
        given = os.environ.get(variable)
        if given:
            origin = f"{variable}={given}"
            source = os.path.abspath(given)
        else:
            build = ["swift", "build", "--product", product]
            if self.build_config != "debug":
                build += ["-c", self.build_config]
            if self.scratch:
                build += ["--scratch-path", self.scratch]
            for attempt in range(1, 6):
                log(f"building {product}: {shlex.join(build)} (attempt {attempt})")
                result = subprocess.run(build, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                if result.returncode == 0:
                    break
                log("build failed (someone may be mid-edit); last lines:\n    "
                    + "\n    ".join(result.stdout.strip().splitlines()[-5:]))
                if attempt == 5:
                    raise BenchError(f"{product} does not build")
                time.sleep(60)
            bin_path = capture(build + ["--show-bin-path"], default="")
            source = os.path.join(bin_path, product)
            origin = shlex.join(build)
        if not os.access(source, os.X_OK):
            raise BenchError(f"no {product} binary at {source}")
        # A private copy: others rebuilding .build/ during the benchmark cannot swap it.
        # (The binary carries its migrations and policies, so it works alone.)
        private = os.path.join(self.work, product)
        shutil.copy2(source, private)
        return private, origin

    def fast_dir(self, name, need):
        """A directory for images and sockets on tmpfs when it has room, else in the work dir."""
        for base in (self.fast, self.work):
            try:
                os.makedirs(base, exist_ok=True)
                if shutil.disk_usage(base).free >= need:
                    directory = os.path.join(base, name)
                    shutil.rmtree(directory, ignore_errors=True)
                    os.makedirs(directory)
                    return directory
            except OSError:
                continue
        raise BenchError(f"no room for {need // MIB} MiB in {self.fast} or {self.work}")
