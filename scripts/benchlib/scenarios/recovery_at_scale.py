"""6. Recovery at scale: livecopy recover over many interrupted disks."""

import os
import shutil
import statistics
import subprocess
import time

from ..common import BenchError, MIB, log, size_text
from ..images import verify_pattern_image
from ..process import cpu_seconds, read_output, running, timed
from ..registry import scenario
from .shared import Fleet, in_scratch, make_fleet_template, write_plan, write_policy
from ..timeline import db_rows


class RecoveryAtScale:
    name = "recovery-at-scale"
    title = "Recovery at scale"
    runs = 3
    vm_count = 100  # one disk each: see ManyDisks.parallel for why no VM has two disks in flight
    disks_per_vm = 1
    size = 64 * MIB
    pattern = "0x5e"
    speed_text, speed_bytes = "2M", 2 * MIB

    def describe(self):
        return f"{self.title}: recover re-attaches {self.vm_count * self.disks_per_vm} disks killed mid-stream"

    def pairs(self, ctx):
        return min(ctx.pairs_override or self.runs, self.runs)

    def run(self, ctx):
        disks = self.vm_count * self.disks_per_vm
        images = ctx.fast_dir(self.name, disks * self.size + 2 * self.size + 256 * MIB)
        return in_scratch(ctx, self.name, lambda directory: self._run(ctx, directory, images), also_remove=(images,))

    def _run(self, ctx, directory, images):
        template = make_fleet_template(images, self.size, self.pattern)
        disks = self.vm_count * self.disks_per_vm
        policy = os.path.join(directory, "policy.yaml")
        write_policy(policy, speed=self.speed_text, retire_source="keep", verify="none", max_parallel_disks=disks)
        results = []
        for number in range(1, self.pairs(ctx) + 1):
            result = self._one(ctx, directory, images, template, policy, number, number == 1)
            results.append(result)
            log(f"[{self.name}] run {number}: killed with {result['streaming']} streaming after "
                f"{result['submit_s']:.1f} s; recover: report {result['report_ms']:.0f} ms, all re-attached "
                f"{result['reattached_ms']:.0f} ms, done {result['recover_s']:.2f} s")
        med = {key: statistics.median(r[key] for r in results)
               for key in ("submit_s", "report_ms", "first_reattach_ms", "reattached_ms", "unthrottled_ms",
                           "completed_ms", "recover_s", "cpu", "rss_mib")}
        ctx.note("6", f"`recover` of {disks} disks killed mid-stream: all re-attached; whole recover",
                 f"{med['reattached_ms']:.0f} ms; {med['recover_s']:.2f} s (copy tail unthrottled at "
                 f"{med['unthrottled_ms']:.0f} ms)")
        lines = [
            f"## {self.name} (issue 5, figure 6)", "",
            f"{self.vm_count} VMs × {self.disks_per_vm} disks = {disks} disks of {size_text(self.size)} (overlays "
            "over one shared base, images and sockets on tmpfs, database on the work dir), one plan with "
            f"`speed: {self.speed_text}`, `max_parallel_disks: {disks}`, `retire_source: keep`, `verify: none`. `livecopy submit` "
            f"runs until the database shows all {disks} disks `streaming` with their stream job started "
            "(the bench polls it read-only), then gets SIGKILL. `livecopy recover --db DB` is then timed: its "
            "per-disk events (`note: re-attaching to QEMU job …`) give the moment each disk was re-attached. Once all "
            "are, the bench lifts the throttle on every job (`block-job-set-speed 0` on the VMs' second "
            "monitors) so that the remaining copy takes little time, and the recover runs to its end. "
            f"{len(results)} runs (no raw baseline exists for recovery; each run is absolute).", "",
            f"Command: `scripts/bench {self.name}`", "",
            "| run | submit until all streaming (s) | recover: reconciliation report printed (ms) | first re-attach (ms) | "
            f"**all {disks} re-attached (ms)** | throttle lifted (ms) | all completed (ms) | recover exit (s) | "
            "recover CPU (s) | recover peak RSS (MiB) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for number, r in enumerate(results, 1):
            lines.append(f"| {number} | {r['submit_s']:.1f} | {r['report_ms']:.0f} | {r['first_reattach_ms']:.0f} | "
                         f"**{r['reattached_ms']:.0f}** | {r['unthrottled_ms']:.0f} | {r['completed_ms']:.0f} | "
                         f"{r['recover_s']:.2f} | {r['cpu']:.2f} | {r['rss_mib']:.1f} |")
        lines.append(f"| median | {med['submit_s']:.1f} | {med['report_ms']:.0f} | {med['first_reattach_ms']:.0f} | "
                     f"**{med['reattached_ms']:.0f}** | {med['unthrottled_ms']:.0f} | {med['completed_ms']:.0f} | "
                     f"{med['recover_s']:.2f} | {med['cpu']:.2f} | {med['rss_mib']:.1f} |")
        lines += [
            "", "Times are from the recover process's spawn. \"Reconciliation report printed\" is when the first "
            "disk's own work began (recover first prints what QEMU and the files say for every disk, one QMP "
            f"round trip pair per disk, sequentially). Checked: recover exited 0, all {disks} disks `completed`, "
            "each drive on its destination alone with no job left; one destination per run verified offline "
            "in run 1.",
        ]
        return "\n".join(lines) + "\n"

    def _one(self, ctx, directory, images, template, policy, number, verify):
        disks = self.vm_count * self.disks_per_vm
        run_dir = os.path.join(images, f"r{number:02d}")
        os.makedirs(run_dir)
        db = os.path.join(directory, f"run{number}.db")
        fleet = Fleet(run_dir, self.vm_count, self.disks_per_vm, template)
        try:
            fleet.start()
            plan = os.path.join(run_dir, "plan.yaml")
            write_plan(plan, f"bench-{self.name}-{number}", policy, fleet.plan_vms())
            submit_out = open(os.path.join(run_dir, "submit.out"), "w")
            started = time.perf_counter()
            submit = subprocess.Popen([ctx.livecopy, "submit", plan, "--db", db], stdout=submit_out,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            streaming = 0
            try:
                while time.perf_counter() - started < 120:
                    time.sleep(0.1)
                    if submit.poll() is not None:
                        raise BenchError(f"submit exited {submit.returncode} before all disks streamed: "
                                         f"{read_output(submit_out.name)[-1500:]}")
                    try:
                        streaming = db_rows(db, "SELECT count(DISTINCT disk_id) FROM events WHERE kind = 'outcome' "
                                                "AND detail LIKE 'block-stream:%started%'")[0][0]
                    except Exception:  # noqa: BLE001  (the db may not exist yet)
                        continue
                    if streaming == disks:
                        break
                else:
                    raise BenchError(f"only {streaming} of {disks} disks streaming after 120 s")
                submit_s = time.perf_counter() - started
            finally:
                submit.kill()
                submit.wait()
                submit_out.close()
            plan_id = db_rows(db, "SELECT max(id) FROM plans")[0][0]
            lifted = {}

            def watcher(process, t0):
                import threading

                def watch():
                    while running(process.pid):
                        time.sleep(0.05)
                        try:
                            count = db_rows(db, "SELECT count(*) FROM events WHERE plan_id = ? AND kind = 'note' AND "
                                                "detail LIKE 're-attaching to %job%' AND at > ?",
                                            (plan_id, spawn_box[0]))[0][0]
                        except Exception:  # noqa: BLE001
                            continue
                        if count >= disks:
                            lifted["at"] = time.time()
                            for vm in fleet.vms:
                                for job in vm.admin_command("query-block-jobs"):
                                    vm.admin_command("block-job-set-speed", device=job["device"], speed=0)
                            return
                threading.Thread(target=watch, daemon=True).start()

            spawn_box = [time.time()]
            out = os.path.join(run_dir, "recover.out")
            seconds, code, usage, spawn_wall = timed([ctx.livecopy, "recover", "--db", db], out, on_start=watcher)
            if code != 0:
                raise BenchError(f"recover exited {code}: {read_output(out)[-2000:]}")
            states = db_rows(db, "SELECT state, count(*) FROM disks WHERE plan_id = ? GROUP BY state", (plan_id,))
            if states != [("completed", disks)]:
                raise BenchError(f"after recover plan {plan_id} disks are {states}")
            rows = db_rows(db, "SELECT kind, to_state, detail, at, disk_id FROM events WHERE plan_id = ? AND at >= ? "
                               "ORDER BY id", (plan_id, spawn_wall))
            reattach = [at for kind, _, detail, at, _ in rows if kind == "note" and detail.startswith("re-attaching to ")]
            if len(reattach) != disks:
                raise BenchError(f"recover re-attached {len(reattach)} of {disks} jobs")
            disk_events = [at for kind, _, _, at, disk in rows if disk is not None]
            completed = [at for kind, to, _, at, _ in rows if kind == "transition" and to == "completed"]
            fleet.check_copied()
            fleet.stop()
            if verify:
                verify_pattern_image(fleet.destinations[0][0], self.size, self.pattern)

            def ms(at):
                return (at - spawn_wall) * 1000
            return {"streaming": streaming, "submit_s": submit_s, "report_ms": ms(min(disk_events)),
                    "first_reattach_ms": ms(min(reattach)), "reattached_ms": ms(max(reattach)),
                    "unthrottled_ms": ms(lifted.get("at", spawn_wall)), "completed_ms": ms(max(completed)),
                    "recover_s": seconds, "cpu": cpu_seconds(usage), "rss_mib": usage.ru_maxrss / 1024}
        finally:
            fleet.stop()
            shutil.rmtree(run_dir, ignore_errors=True)


scenario(RecoveryAtScale())
