"""4. Idle cost: what livecopy costs while a copy runs throttled."""

import os
import shutil
import time

from ..common import BenchError, GIB, MIB, RAW_CLIENT, log, run, size_text
from ..images import copy_pristine, fill_pattern_image
from ..process import cpu_seconds, read_output, timed
from ..registry import scenario
from .shared import create_database, in_scratch, write_plan, write_policy
from ..vm import VM


def proc_cpu(pid):
    """utime + stime of process pid (all threads), in seconds, and its voluntary context switches."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    switches = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        switches += int(line.split()[1])
    except OSError:
        pass
    return cpu, switches


class IdleCost:
    name = "idle-cost"
    title = "Idle cost"
    size = 1 * GIB
    speed_text, speed_bytes = "32M", 32 * MIB
    pattern = "0x2f"
    window = (4.0, 28.0)  # seconds after spawn: the steady state, without start-up or completion

    def describe(self):
        return f"{self.title}: CPU of livecopy during a {size_text(self.size)} stream throttled to {self.speed_text}"

    def pairs(self, ctx):
        return 1

    def run(self, ctx):
        return in_scratch(ctx, self.name, lambda directory: self._run(ctx, directory))

    def _run(self, ctx, directory):
        pristine = os.path.join(directory, "pristine.qcow2")
        fill_pattern_image(pristine, self.size, self.pattern)
        db = os.path.join(directory, "livecopy.db")
        create_database(ctx, db)  # create and migrate it once, untimed
        policy = os.path.join(directory, "policy.yaml")
        write_policy(policy, speed=self.speed_text, retire_source="keep", verify="none")
        results = {}
        for tool in ("livecopy", "raw"):
            results[tool] = self._one(ctx, directory, pristine, db, policy, tool)
            r = results[tool]
            log(f"[{self.name}] {tool}: {r['seconds']:.1f} s wall, window CPU {r['window_cpu'] * 1000:.0f} ms "
                f"over {r['window']:.1f} s = {r['window_pct']:.3f}% of a core")
        lc, raw = results["livecopy"], results["raw"]
        ctx.note("4", f"livecopy CPU during a throttled stream (steady {lc['window']:.0f} s window)",
                 f"{lc['window_pct']:.3f}% of one core", "< 1%", lc["window_pct"] < 1)
        lines = [
            f"## {self.name} (issue 5, figure 4)", "",
            f"One VM, one qcow2 disk with {size_text(self.size)} allocated, copied at `speed: {self.speed_text}` "
            f"(`retire_source: keep`, `verify: none`; about {self.size / self.speed_bytes:.0f} s), default `progress_interval` (1 s) and the owner's "
            "1 s heartbeat. The bench samples the process's utime + stime from `/proc/PID/stat` (all threads) "
            f"at {self.window[0]:.0f} s and {self.window[1]:.0f} s after spawn — the steady state, without start-up "
            "and completion — and takes the total from `os.wait4`. Voluntary context switches summed over "
            "`/proc/PID/task/*/status` count wake-ups. The raw client (blocked in `recv` on the event) is the floor.", "",
            f"Command: `scripts/bench {self.name}`", "",
            "| | livecopy | raw client |", "|---|---:|---:|",
            f"| wall (s) | {lc['seconds']:.2f} | {raw['seconds']:.2f} |",
            f"| CPU in the {lc['window']:.0f} s window (ms) | {lc['window_cpu'] * 1000:.0f} | {raw['window_cpu'] * 1000:.0f} |",
            f"| **share of one core in the window** | **{lc['window_pct']:.3f}%** | {raw['window_pct']:.3f}% |",
            f"| wake-ups (voluntary context switches) per second in the window | {lc['wakeups']:.1f} | {raw['wakeups']:.1f} |",
            f"| whole-process CPU user + sys (ms) | {lc['cpu'] * 1000:.0f} | {raw['cpu'] * 1000:.0f} |",
            f"| whole-process share of one core | {lc['cpu'] / lc['seconds'] * 100:.3f}% | {raw['cpu'] / raw['seconds'] * 100:.3f}% |",
            f"| peak RSS (MiB) | {lc['rss_mib']:.1f} | {raw['rss_mib']:.1f} |",
            "",
            f"Target: < 1% of one core. Per second livecopy renews its lease and looks for cancel and operator "
            "requests (SQLite reads and one write with fsync), polls `query-jobs` once (`progress_interval`), "
            "and persists progress every 2 s; the clock resolution of `/proc/PID/stat` is 10 ms.",
        ]
        return "\n".join(lines) + "\n"

    def _one(self, ctx, directory, pristine, db, policy, tool):
        run_dir = os.path.join(directory, tool)
        os.makedirs(run_dir)
        source = os.path.join(run_dir, "src.qcow2")
        destination = os.path.join(run_dir, "dst.qcow2")
        copy_pristine(pristine, source)
        os.sync()
        vm = VM(run_dir, source)
        samples = {}
        try:
            vm.start()
            if tool == "livecopy":
                plan = os.path.join(run_dir, "plan.yaml")
                write_plan(plan, f"bench-{self.name}", policy, [("bench-vm", vm.qmp, [("drive0", destination)])])
                argv = [ctx.livecopy, "submit", plan, "--db", db]
            else:
                argv = [ctx.python, RAW_CLIENT, vm.qmp, "drive0", destination, "--speed", str(self.speed_bytes)]

            def sampler(process, started):
                import threading

                def sample():
                    for label, at in (("start", self.window[0]), ("end", self.window[1])):
                        delay = started + at - time.perf_counter()
                        if delay > 0:
                            time.sleep(delay)
                        try:
                            samples[label] = (time.perf_counter(),) + proc_cpu(process.pid)
                        except OSError:
                            return
                threading.Thread(target=sample, daemon=True).start()

            out = os.path.join(run_dir, "out")
            seconds, code, usage, _ = timed(argv, out, on_start=sampler)
            if code != 0:
                raise BenchError(f"{tool} exited {code}: {read_output(out).strip()[-1500:]}")
            if "start" not in samples or "end" not in samples:
                raise BenchError(f"{tool} ended after {seconds:.1f} s, before the sampling window closed")
            vm.check_copied(destination)
            window = samples["end"][0] - samples["start"][0]
            window_cpu = samples["end"][1] - samples["start"][1]
            return {"seconds": seconds, "cpu": cpu_seconds(usage), "rss_mib": usage.ru_maxrss / 1024,
                    "window": window, "window_cpu": window_cpu, "window_pct": window_cpu / window * 100,
                    "wakeups": (samples["end"][2] - samples["start"][2]) / window}
        finally:
            vm.stop()
            shutil.rmtree(run_dir, ignore_errors=True)


scenario(IdleCost())
