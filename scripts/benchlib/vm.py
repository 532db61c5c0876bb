"""The VM under test: qemu-system-x86_64 -machine none with a client monitor and the
bench's own admin monitor."""

import os
import subprocess
import time

from .common import BenchError, raw_qmp_copy


class VM:
    """A throwaway QEMU with no guest OS, one disk `drive0`, and two QMP monitors:
    vm.qmp for the client under test and vm.admin.qmp for the bench itself."""

    def __init__(self, directory, image, prefix="vm", cache=None):
        self.directory = directory
        self.qmp = os.path.join(directory, f"{prefix}.qmp")
        self.admin = os.path.join(directory, f"{prefix}.admin.qmp")
        self.log_path = os.path.join(directory, f"{prefix}.qemu.log")
        self.images = [image] if isinstance(image, str) else list(image)  # drive0, drive1, …
        self.image = self.images[0]
        self.process = None
        self.cache = cache  # -drive cache=… (None: QEMU's default, writeback)

    def spawn(self):
        drives = []
        for number, image in enumerate(self.images):
            drives += ["-drive", f"if=none,id=drive{number},format=qcow2,file={image}"
                       + (f",cache={self.cache}" if self.cache else "")]
        with open(self.log_path, "w") as log_file:
            self.process = subprocess.Popen([
                "qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none",
                "-qmp", f"unix:{self.qmp},server=on,wait=off",
                "-qmp", f"unix:{self.admin},server=on,wait=off",
            ] + drives, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while not (os.path.exists(self.qmp) and os.path.exists(self.admin)):
            if self.process.poll() is not None:
                raise BenchError(f"QEMU exited {self.process.returncode}: {self.log()}")
            if time.monotonic() > deadline:
                raise BenchError(f"QEMU did not create its QMP sockets within {timeout} s")
            time.sleep(0.02)
        # QEMU binds a socket a moment before it listens on it: a refused connection right
        # after the file appears is retried.
        while True:
            try:
                block = self.admin_command("query-block")
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        for number, image in enumerate(self.images):
            drive = next((b for b in block if b.get("device") == f"drive{number}"), None)
            if not drive or drive.get("inserted", {}).get("file") != image:
                raise BenchError(f"drive{number} is not on {image}: {block}")

    def start(self):
        self.spawn()
        self.wait_ready()

    def admin_command(self, command, **arguments):
        """One command on the admin monitor, then disconnect (so the client under test
        never shares a connection or a socket with the bench)."""
        monitor = raw_qmp_copy.QMP(self.admin)
        try:
            monitor.greeting()
            monitor.execute("qmp_capabilities")
            return monitor.execute(command, **arguments)
        finally:
            monitor.sock.close()

    def check_copied(self, destination):
        """After a copy: each drive runs on its destination alone and no job is left."""
        destinations = [destination] if isinstance(destination, str) else list(destination)
        block = self.admin_command("query-block")
        for number, wanted in enumerate(destinations):
            inserted = next((b for b in block if b.get("device") == f"drive{number}"), {}).get("inserted", {})
            if inserted.get("file") != wanted or inserted.get("backing_file"):
                raise BenchError(f"after the copy drive{number} is {inserted.get('file')} "
                                 f"with backing {inserted.get('backing_file')}, expected {wanted} alone")
        jobs = self.admin_command("query-jobs")
        if jobs:
            raise BenchError(f"jobs left in QEMU after the copy: {jobs}")

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self.admin_command("quit")
            self.process.wait(timeout=30)
        except (OSError, raw_qmp_copy.QMPError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read().strip()[-2000:]
        except OSError:
            return ""
