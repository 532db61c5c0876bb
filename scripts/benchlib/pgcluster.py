"""A throwaway PostgreSQL cluster for the fleet scenarios (scripts/postgres on a port of its
own), a long-lived psql session to query it, and CPU accounting from /proc."""

import os
import random
import subprocess
import time

from .common import SCRIPTS, BenchError, run

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid, children=False):
    """utime+stime of pid in seconds (with children: also its reaped children's), 0 if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # fields[0] is the state (field 3); utime is field 14, stime 15, cutime 16, cstime 17.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def child_pids(parent):
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            pids.append(int(entry))
    return pids


class Cluster:
    """scripts/postgres start DIR on a random port in 57000–58999 (never the dev server's
    55432). `url` and `password_file` are what livecopy's --db and LIVECOPY_DB_PASSWORD_FILE
    take; `sql()` runs statements through one psql session over the cluster's Unix socket."""

    def __init__(self, directory, port=None, settings=()):
        self.directory = directory
        self.port = port or 57000 + random.randrange(2000)
        self.settings = settings
        self.url = None
        self.password_file = None
        self.session = None

    def start(self):
        env = dict(os.environ, LIVECOPY_PG_PORT=str(self.port))
        output = run([os.path.join(SCRIPTS, "postgres"), "start", self.directory], env=env)
        for line in output.splitlines():
            if line.startswith("export LIVECOPY_TEST_POSTGRES="):
                self.url = line.split("=", 1)[1]
            elif line.startswith("export LIVECOPY_TEST_POSTGRES_PASSWORD_FILE="):
                self.password_file = line.split("=", 1)[1]
        if not self.url or not self.password_file:
            raise BenchError(f"scripts/postgres start printed no URL: {output[-1000:]}")
        if self.settings:
            for setting in self.settings:
                self.psql_once(f"ALTER SYSTEM SET {setting}")
            self.psql_once("SELECT pg_reload_conf()")
        self.session = subprocess.Popen(self.psql_argv() + ["-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=0"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, bufsize=1)

    def env(self):
        return dict(os.environ, LIVECOPY_DB=self.url, LIVECOPY_DB_PASSWORD_FILE=self.password_file)

    def psql_argv(self, database="postgres"):
        # The Unix socket in the cluster's directory: trust authentication, no password.
        return ["psql", "-X", "-h", self.directory, "-p", str(self.port), "-U", "livecopy", "-d", database]

    def psql_once(self, sql, timeout=None):
        return run(self.psql_argv() + ["-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql], timeout=timeout)

    def psql_file(self, path, timeout=None):
        return run(self.psql_argv() + ["-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", path], timeout=timeout)

    def sql(self, statement):
        """Rows (lists of strings) of one statement, through the long-lived session (one
        backend for the whole run: polling costs the server no connection set-up)."""
        marker = f"__bench_{random.randrange(1 << 30)}__"
        self.session.stdin.write(statement.rstrip().rstrip(";") + ";\n\\echo " + marker + "\n")
        self.session.stdin.flush()
        rows = []
        while True:
            line = self.session.stdout.readline()
            if not line:
                raise BenchError("psql session ended")
            line = line.rstrip("\n")
            if line == marker:
                return rows
            if line.startswith(("ERROR:", "psql:")):
                raise BenchError(f"psql: {line} (statement: {statement[:200]})")
            if line:
                rows.append(line.split("\t"))

    def postmaster_pid(self):
        with open(os.path.join(self.directory, "data", "postmaster.pid")) as f:
            return int(f.readline())

    def cpu_seconds(self):
        """CPU of the whole cluster so far: the postmaster with its reaped children (backends
        that ended) plus every live child (backends, checkpointer, walwriter, …)."""
        master = self.postmaster_pid()
        return proc_cpu(master, children=True) + sum(proc_cpu(pid) for pid in child_pids(master))

    def stop(self):
        if self.session is not None:
            try:
                self.session.stdin.close()
                self.session.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.session.kill()
        env = dict(os.environ, LIVECOPY_PG_PORT=str(self.port))
        subprocess.run([os.path.join(SCRIPTS, "postgres"), "stop", self.directory], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(predicate, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise BenchError(f"timed out after {timeout} s waiting for {what}")
