"""3. Many disks: livecopy's per-disk cost over many VMs and disks."""

import json
import os
import shutil
import statistics
import time

from ..common import BenchError, MIB, RAW_CLIENT, capture, log, run, size_text
from ..images import verify_pattern_image
from ..process import cpu_seconds, read_output, running, timed
from ..registry import scenario
from .shared import Fleet, abba, create_database, in_scratch, make_fleet_template, pair_rows, write_plan, write_policy
from ..stats import describe_pairs, pct
from ..timeline import db_rows, event_label


class ManyDisks:
    title = "Many disks"
    default_pairs = 5
    vm_count = 50
    disks_per_vm = 2
    size = 64 * MIB
    pattern = "0x71"

    policy_settings = {}  # more policy keys for livecopy (the mirror variant: strategy)
    raw_args = []  # more raw_qmp_copy.py options (the mirror variant: --blockdev-mirror)
    # livecopy's events that start and end QEMU's copy of a disk (the first of the end
    # labels that the disk has)
    copy_labels = ("outcome block-stream", "intent job-finalize")

    def __init__(self, name, parallel):
        self.name = name
        self.parallel = parallel

    def describe(self):
        return (f"{self.title}: {self.vm_count} VMs × {self.disks_per_vm} disks × {size_text(self.size)}, "
                f"livecopy vs raw client at max_parallel_disks {self.parallel}")

    def pairs(self, ctx):
        return ctx.pairs_override or self.default_pairs

    def run(self, ctx):
        disks = self.vm_count * self.disks_per_vm
        need = disks * self.size + 2 * self.size + 256 * MIB
        images = ctx.fast_dir(self.name, need)
        return in_scratch(ctx, self.name, lambda directory: self._run(ctx, directory, images), also_remove=(images,))

    def _run(self, ctx, directory, images):
        template = make_fleet_template(images, self.size, self.pattern)
        db = os.path.join(directory, "livecopy.db")
        create_database(ctx, db)  # create and migrate it once, untimed
        policy = os.path.join(directory, "policy.yaml")
        write_policy(policy, speed=0, retire_source="keep", verify="none", max_parallel_disks=self.parallel, **self.policy_settings)
        warm, _ = self._one(ctx, images, template, db, policy, 0, "raw", False)
        log(f"[{self.name}] warm-up raw: {warm['seconds']:.3f} s (discarded)")
        results, verified = [], []
        for index in range(self.pairs(ctx)):
            pair = {"pair": index + 1, "order": abba(index)}
            for kind in pair["order"]:
                tool = "livecopy" if kind == "A" else "raw"
                outcome, check = self._one(ctx, images, template, db, policy, index + 1, tool, index == 0)
                pair[tool] = outcome["seconds"]
                pair[f"{tool}_extra"] = outcome
                if check:
                    verified.append(f"{tool}, pair {index + 1}: {check}")
                log(f"[{self.name}] pair {index + 1} {tool}: {outcome['seconds']:.3f} s, CPU "
                    f"{outcome['cpu']:.2f} s, peak RSS {outcome['rss_mib']:.1f} MiB")
            results.append(pair)
        return self._section(ctx, results, verified, images)

    def _one(self, ctx, images, template, db, policy, number, tool, verify):
        run_dir = os.path.join(images, f"p{number:02d}{tool[0]}")
        os.makedirs(run_dir)
        fleet = Fleet(run_dir, self.vm_count, self.disks_per_vm, template)
        try:
            started = time.monotonic()
            fleet.start()
            vm_start = time.monotonic() - started
            out = os.path.join(run_dir, f"{tool}.out")
            if tool == "livecopy":
                plan = os.path.join(run_dir, "plan.yaml")
                write_plan(plan, f"bench-{self.name}-{number}", policy, fleet.plan_vms())
                argv = [ctx.livecopy, "submit", plan, "--db", db]
            else:
                plan = os.path.join(run_dir, "plan.json")
                with open(plan, "w") as f:
                    json.dump(fleet.raw_plan(), f)
                argv = [ctx.python, RAW_CLIENT, "--many", plan, "--parallel", str(self.parallel), "--speed", "0"]
                argv += self.raw_args
            children = [0.0]

            def watch_children(process, _):
                """Polls the CPU of the children the process has reaped (its qemu-img runs), so
                that os.wait4's total, which includes them, can be split."""
                import threading

                def poll():
                    ticks = os.sysconf("SC_CLK_TCK")
                    while running(process.pid):
                        try:
                            with open(f"/proc/{process.pid}/stat") as f:
                                fields = f.read().rsplit(")", 1)[1].split()
                            children[0] = (int(fields[13]) + int(fields[14])) / ticks
                        except (OSError, IndexError, ValueError):
                            return
                        time.sleep(0.05)
                threading.Thread(target=poll, daemon=True).start()

            seconds, code, usage, spawn_wall = timed(argv, out, on_start=watch_children)
            output = read_output(out)
            if code != 0:
                raise BenchError(f"{tool} (pair {number}) exited {code}: {output.strip()[-1500:]}")
            outcome = {"seconds": seconds, "cpu": cpu_seconds(usage), "user": usage.ru_utime, "sys": usage.ru_stime,
                       "rss_mib": usage.ru_maxrss / 1024, "vm_start": vm_start, "children_cpu": children[0]}
            if tool == "raw":
                result = json.loads(output.strip().splitlines()[-1])
                if not result.get("ok") or result.get("copied") != self.vm_count * self.disks_per_vm:
                    raise BenchError(f"raw (pair {number}) did not copy every disk: {result}")
                outcome["disk_ms"] = result["disk_median"] * 1000
                outcome["copy_mean_ms"] = result["copy_mean"] * 1000
                outcome["outside_copy_ms"] = result["outside_copy_mean"] * 1000
                outcome["gap_ms"] = result["gap_mean"] * 1000
                outcome["before_first_ms"] = (result["t0_wall"] - spawn_wall + result["first_start"]) * 1000
                outcome["after_last_ms"] = seconds * 1000 - ((result["t0_wall"] - spawn_wall) + result["last_done"]) * 1000
            else:
                plan_id = db_rows(db, "SELECT max(id) FROM plans")[0][0]
                states = db_rows(db, "SELECT state, count(*) FROM disks WHERE plan_id = ? GROUP BY state", (plan_id,))
                if states != [("completed", self.vm_count * self.disks_per_vm)]:
                    raise BenchError(f"livecopy plan {plan_id} disks: {states}")
                rows = db_rows(db, "SELECT kind, to_state, detail, at, disk_id FROM events WHERE plan_id = ? ORDER BY id",
                               (plan_id,))
                first = rows[0][3]
                starts = [at for kind, to, _, at, _ in rows if kind == "transition" and to == "snapshotting"]
                ends = [at for kind, to, _, at, _ in rows if kind == "transition" and to == "completed"]
                # Per disk: the time from one persisted step to the next, by step.
                per_disk = {}
                for kind, to, detail, at, disk in rows:
                    if disk is not None:
                        per_disk.setdefault(disk, []).append((event_label(kind, to, detail), at))
                steps = {}
                for events in per_disk.values():
                    for (_, before), (label, after) in zip(events, events[1:]):
                        steps.setdefault(label, []).append((after - before) * 1000)
                    steps.setdefault("whole disk (first → last event)", []).append((events[-1][1] - events[0][1]) * 1000)
                outcome["steps"] = {label: statistics.median(values) for label, values in steps.items()}
                outcome["step_means"] = {label: statistics.mean(values) for label, values in steps.items()}
                outcome["step_order"] = [label for label, _ in next(iter(per_disk.values()))[1:]]
                # The same split as the raw client's: time outside QEMU's copy (block-stream started →
                # job pending, i.e. `outcome block-stream` → `intent job-finalize`), and the gaps between disks.
                ordered = sorted(per_disk)
                copies, outside = [], []
                first_label, last_labels = self.copy_labels[0], self.copy_labels[1:]
                for disk in ordered:
                    events = dict((label, at) for label, at in per_disk[disk])
                    last_label = next((label for label in last_labels if label in events), None)
                    if first_label not in events or last_label is None:
                        raise BenchError(f"livecopy plan {plan_id}: no events {self.copy_labels} for disk {disk}; "
                                         f"its events: {[label for label, _ in per_disk[disk]]}")
                    copy = events[last_label] - events[first_label]
                    copies.append(copy)
                    outside.append(per_disk[disk][-1][1] - per_disk[disk][0][1] - copy)
                gaps = [per_disk[b][0][1] - per_disk[a][-1][1] for a, b in zip(ordered, ordered[1:])]
                outcome["copy_mean_ms"] = statistics.mean(copies) * 1000
                outcome["copy_p10_p90_ms"] = (pct(copies, 0.1) * 1000, pct(copies, 0.9) * 1000)
                outcome["outside_copy_ms"] = statistics.mean(outside) * 1000
                outcome["gap_ms"] = statistics.mean(gaps) * 1000 if gaps else 0
                outcome["before_first_ms"] = (per_disk[ordered[0]][0][1] - spawn_wall) * 1000
                outcome["after_last_ms"] = seconds * 1000 - (per_disk[ordered[-1]][-1][1] - spawn_wall) * 1000
                outcome["recorded_ms"] = (first - spawn_wall) * 1000
                # (the mirror strategy's disks may take other states: then None)
                outcome["first_disk_ms"] = (min(starts) - spawn_wall) * 1000 if starts else None
                outcome["last_disk_ms"] = (max(ends) - spawn_wall) * 1000 if ends else None
                outcome["events"] = len(rows)
            fleet.check_copied()
            fleet.stop()
            check = None
            if verify:
                check = verify_pattern_image(fleet.destinations[-1][-1], self.size, self.pattern)
            return outcome, check
        finally:
            fleet.stop()
            shutil.rmtree(run_dir, ignore_errors=True)

    def _section(self, ctx, results, verified, images):
        s = describe_pairs(results)
        disks = self.vm_count * self.disks_per_vm
        per_disk = [(p["livecopy"] - p["raw"]) * 1000 / disks for p in results]
        # For a later scenario of the same run (many-disks-mirror compares with this one).
        ctx.__dict__.setdefault("per_disk_overhead_ms", {})[self.name] = statistics.median(per_disk)
        lc = [p["livecopy_extra"] for p in results]
        raw = [p["raw_extra"] for p in results]
        rss = max(x["rss_mib"] for x in lc)

        def m(rows, key):
            return statistics.median(x[key] for x in rows)
        # One disk at a time the copies never overlap: wall − Σ copies is everything else.
        lc_else = statistics.median((x["seconds"] * 1000 - x["copy_mean_ms"] * disks) / disks for x in lc)
        raw_else = statistics.median((x["seconds"] * 1000 - x["copy_mean_ms"] * disks) / disks for x in raw)
        estimate = lc_else - raw_else
        tag = f"max_parallel_disks {self.parallel}"
        ctx.note("3", f"{disks} disks ({tag}): total wall livecopy / raw; disks/s",
                 f"{s['a_median']:.2f} s / {s['b_median']:.2f} s; {disks / s['a_median']:.1f} disks/s")
        if self.parallel == 1:
            ctx.note("3", f"overhead per disk against the raw client outside QEMU's copy ({tag})",
                     f"{estimate:+.1f} ms", "≤ 20 ms", estimate <= 20)
        ctx.note("3", f"overhead per disk, whole wall (A − B) / {disks} ({tag}; includes the copy's variation)",
                 f"{statistics.median(per_disk):+.1f} ms", "≤ 20 ms", statistics.median(per_disk) <= 20)
        ctx.note("3", f"orchestrator CPU (user+sys) for the plan, with any children (livecopy alone); peak RSS ({tag})",
                 f"{statistics.median(x['cpu'] for x in lc):.2f} s ({statistics.median(x['cpu'] - x['children_cpu'] for x in lc):.2f} s); "
                 f"{rss:.1f} MiB", "RSS ≤ 64 MiB", rss <= 64)
        command = f"scripts/bench {self.name}" + (f" (BENCH_PAIRS={ctx.pairs_override})" if ctx.pairs_override else "")
        fs = (capture(["findmnt", "-n", "-o", "FSTYPE", "-T", images]).split() or ["?"])[0]
        lines = [
            f"## {self.name} (issue 5, figure 3)", "",
            f"One plan of {self.vm_count} VMs × {self.disks_per_vm} disks = {disks} disks, each a qcow2 overlay "
            f"over one shared base image with {size_text(self.size)} allocated (pattern {self.pattern}), so each "
            f"stream copies {size_text(self.size)}; {self.vm_count} QEMU processes (`-machine none`) per run. "
            f"Images and sockets on {fs} ({images}), so that disk noise does not drown per-disk milliseconds "
            f"(the flush livecopy sends before each finalize is therefore nearly free here); the database stays "
            f"on the work dir's file system (its fsyncs count). A = `livecopy submit` (`speed: 0`, "
            f"`max_parallel_disks: {self.parallel}`, `retire_source: keep`, `verify: none`), B = `raw_qmp_copy.py --many "
            f"--parallel {self.parallel}`: the same 100 disks in the same order, at most {self.parallel} at a "
            "time (the engine's task group takes the plan's disks in order and starts the next one as soon as "
            "one ends; asyncio.Semaphore does the same), one QMP connection per VM shared by its disks. "
            f"{len(results)} pairs in ABBA order after one discarded raw warm-up. Timed: the process, spawn to "
            "exit; CPU and peak RSS from `os.wait4` on that process.", "",
            ("`max_parallel_disks: 4` is the default policy's; `many-disks-serial` runs the same plan one disk "
             "at a time, where the copies never overlap and the time outside them isolates livecopy's per-disk "
             "cost. " if self.parallel > 1 else
             "This is the one-disk-at-a-time run of `many-disks`: the copies never overlap, so the wall time "
             "outside them is each client's per-disk cost, free of the copy's variation. ")
            + "QEMU 7.2.22 note: a `query-named-block-nodes` sent to a VM while another stream job of the same VM "
            "completes can crash QEMU (SIGSEGV near `bdrv_refresh_filename`). Seen with livecopy at d528a48 "
            "(its verification sent it) in 1–4 of the 50 VMs per run at 4 in parallel, and reproduced with the "
            "raw client plus `query-block` and `query-named-block-nodes` after each disk (1–2 VMs killed in 5 of "
            "7 runs, on plain two-image chains too); the engine no longer sends it, and 5 plain runs of this plan "
            "at 4 in parallel had no crash.", "",
            f"Command: `{command}`", "",
        ] + pair_rows(results, "livecopy", "raw") + [
            "",
            "| summary | value |", "|---|---:|",
            f"| median total wall, livecopy (s) | {s['a_median']:.3f} ({disks / s['a_median']:.1f} disks/s) |",
            f"| median total wall, raw (s) | {s['b_median']:.3f} ({disks / s['b_median']:.1f} disks/s) |",
            f"| median ratio livecopy / raw | {s['ratio_median']:.3f} (min {s['ratio_min']:.3f}, max {s['ratio_max']:.3f}) |",
            f"| **overhead per disk, median of per-pair (A − B) / {disks} (ms)** | **{statistics.median(per_disk):+.1f}** "
            f"(min {min(per_disk):+.1f}, max {max(per_disk):+.1f}); target ≤ 20 |",
            f"| livecopy CPU user + sys (s), median, from `os.wait4` | {statistics.median(x['cpu'] for x in lc):.2f} "
            f"(user {statistics.median(x['user'] for x in lc):.2f}, sys {statistics.median(x['sys'] for x in lc):.2f}); "
            f"{statistics.median(x['cpu'] for x in lc) * 1000 / disks:.1f} ms per disk |",
            f"| of which its `qemu-img` children (cutime + cstime from `/proc/PID/stat`, polled every 50 ms) | "
            f"{statistics.median(x['children_cpu'] for x in lc):.2f}; livecopy itself about "
            f"{statistics.median(x['cpu'] - x['children_cpu'] for x in lc):.2f} |",
            f"| raw client CPU user + sys (s), median | {statistics.median(x['cpu'] for x in raw):.2f} |",
            f"| **livecopy peak RSS (MiB), max over runs** | **{max(x['rss_mib'] for x in lc):.1f}**; target ≤ 64 |",
            f"| raw client peak RSS (MiB) | {max(x['rss_mib'] for x in raw):.1f} |",
            f"| livecopy: spawn → plan recorded (preflight of {self.vm_count} VMs), median (ms) | "
            f"{statistics.median(x['recorded_ms'] for x in lc):.0f} |",
            f"| livecopy: spawn → first disk snapshotting, median (ms) | {statistics.median(x['first_disk_ms'] for x in lc):.0f} |",
            f"| livecopy: last disk completed → process exit, median (ms) | "
            f"{statistics.median(x['seconds'] * 1000 - x['last_disk_ms'] for x in lc):.0f} |",
            f"| events written per plan | {lc[0]['events']} |",
            f"| starting {self.vm_count} QEMUs (untimed), median (s) | "
            f"{statistics.median(x['vm_start'] for x in lc + raw):.2f} |",
            "",
        ]
        order = lc[0]["step_order"]
        if self.parallel == 1:
            lines += [
            "Overhead per disk outside the copy itself. The copy (stream started → job done) is QEMU's work and "
            "its speed moves with whatever else the 2 cores do: within single runs it varied from "
            f"{min(x['copy_p10_p90_ms'][0] for x in lc):.0f} to {max(x['copy_p10_p90_ms'][1] for x in lc):.0f} ms "
            "per disk (10th–90th percentile), which swamps a per-disk difference of milliseconds in the total wall "
            "time. Both clients therefore also time every disk: livecopy from its event rows, the raw client "
            "from its own clock (means over the 100 disks, medians over the runs):", "",
            "| per disk (ms) | livecopy | raw client | livecopy − raw |", "|---|---:|---:|---:|",
            f"| QEMU's copy: stream started → job done (mean) | {m(lc, 'copy_mean_ms'):.1f} | "
            f"{m(raw, 'copy_mean_ms'):.1f} | {m(lc, 'copy_mean_ms') - m(raw, 'copy_mean_ms'):+.1f} |",
            f"| everything else: (wall − Σ copies) / {disks} | {lc_else:.1f} | {raw_else:.1f} | **{estimate:+.1f}** |",
            "",
            f"So livecopy's cost per disk outside the copy is **{estimate:+.1f} ms** against the raw client "
            "(target ≤ 20 ms); the steps table below shows where it goes.",
            "",
            ]
        lines += [
            "Per disk, livecopy's steps (the time from the previous persisted event of that disk to this one, "
            "median and mean over the 100 disks, then the median over the runs; each event is one SQLite "
            "transaction with fsync; `outcome create-destination` is the `qemu-img create` subprocess that makes "
            "the destination, `intent job-finalize` the copy). The raw "
            f"client's whole per-disk cycle (snapshot → stream → completed → dismiss) took "
            f"{statistics.median(x['disk_ms'] for x in raw):.1f} ms median.", "",
            "| step (event of the disk) | median Δ (ms) | mean Δ (ms) |", "|---|---:|---:|",
        ] + [f"| {label} | {statistics.median(x['steps'].get(label, 0) for x in lc):.1f} | "
             f"{statistics.median(x['step_means'].get(label, 0) for x in lc):.1f} |" for label in order] + [
            f"| **whole disk (first → last event)** | **"
            f"{statistics.median(x['steps']['whole disk (first → last event)'] for x in lc):.1f}** | "
            f"{statistics.median(x['step_means']['whole disk (first → last event)'] for x in lc):.1f} |",
            "",
            "Checked: every livecopy plan ended with all 100 disks `completed`; the raw client saw "
            "BLOCK_JOB_COMPLETED with offset = len for all 100; after every run each drive of each VM ran on its "
            "destination alone with no job left. Offline:",
        ] + [f"- {v}" for v in verified]
        return "\n".join(lines) + "\n"


scenario(ManyDisks("many-disks", 4))          # the default policy's max_parallel_disks
scenario(ManyDisks("many-disks-serial", 1))   # one disk at a time: the copies never overlap, so the time
