"""validate-eta: `livecopy validate`'s estimate of a throttled plan against the plan's real
duration under `livecopy submit` (issue 14)."""

import json
import os
import shutil
import statistics

from ..common import BenchError, GIB, MIB, log, run
from ..images import fresh_run
from ..process import read_output, timed
from ..registry import scenario
from .shared import in_scratch, start_vms, stop_vms, write_plan, write_policy
from ..vm import VM


class ValidateETA:
    """Two VMs with two 1 GiB qcow2 disks each, holding 192, 128, 320 and 64 MiB in 4 MiB
    extents spread over the disk; one plan at speed 32M with max_parallel_disks 2, so the
    order matters (the third disk starts when the second ends, the fourth when the first
    does). Each round: `livecopy validate --json` (its estimate), then `livecopy submit`
    (timed), on fresh copies of the sources."""

    name = "validate-eta"
    title = "validate's estimate against the real duration"
    default_pairs = 5
    virtual = 1 * GIB
    allocated_mib = (192, 128, 320, 64)
    extent = 4 * MIB
    speed = "32M"
    speed_bytes = 32 * MIB
    parallel = 2
    target = 0.15

    def describe(self):
        return (f"{self.title}: 4 disks ({'/'.join(map(str, self.allocated_mib))} MiB of 1 GiB), speed {self.speed}, "
                f"max_parallel_disks {self.parallel}")

    def pairs(self, ctx):
        return ctx.pairs_override or self.default_pairs

    def run(self, ctx):
        return in_scratch(ctx, self.name, lambda directory: self._run(ctx, directory))

    def _pristine(self, path, mib, pattern):
        """A 1 GiB qcow2 holding `mib` MiB in 4 MiB extents spread evenly over the disk."""
        run(["qemu-img", "create", "-q", "-f", "qcow2", path, str(self.virtual)])
        count = mib * MIB // self.extent
        stride = self.virtual // count // MIB * MIB
        writes = []
        for index in range(count):
            writes += ["-c", f"write -P {pattern} {index * stride} {self.extent}"]
        run(["qemu-io", "-f", "qcow2"] + writes + [path])
        allocated = sum(int(e["length"]) for e in json.loads(run(["qemu-img", "map", "-f", "qcow2", "--output=json", path]))
                        if e.get("data"))
        if allocated != mib * MIB:
            raise BenchError(f"{path}: {allocated} bytes allocated, expected {mib} MiB")

    def _run(self, ctx, directory):
        pristines = []
        for number, mib in enumerate(self.allocated_mib):
            pristine = os.path.join(directory, f"pristine{number}.qcow2")
            self._pristine(pristine, mib, hex(0x61 + number))
            pristines.append(pristine)
        db = os.path.join(directory, "livecopy.db")
        policy = os.path.join(directory, "policy.yaml")
        write_policy(policy, speed=self.speed, max_parallel_disks=self.parallel, retire_source="keep", verify="none")
        rounds = []
        for number in range(1, self.pairs(ctx) + 1):
            result = self._round(ctx, directory, pristines, db, policy, number)
            rounds.append(result)
            log(f"[{self.name}] round {number}: estimate {result['estimate']:.2f} s, real {result['real']:.2f} s, "
                f"ratio {result['ratio']:.3f}; validate took {result['validate']:.2f} s")
        ratios = [r["ratio"] for r in rounds]
        worst = max(abs(r - 1) for r in ratios)
        median = statistics.median(ratios)
        met = worst <= self.target
        ctx.note("14", "validate's estimate / the real duration of a throttled 4-disk plan (median; worst)",
                 f"{median:.3f}; {max(ratios, key=lambda r: abs(r - 1)):.3f}", f"within ±{self.target:.0%}", met)
        command = f"scripts/bench {self.name}" + (f" (BENCH_PAIRS={ctx.pairs_override})" if ctx.pairs_override else "")
        first = rounds[0]
        lines = [
            f"## {self.name} (issue 14: the estimate of `livecopy validate`)", "",
            "Two VMs (`-machine none`) with two qcow2 disks of 1 GiB each, holding "
            f"{', '.join(f'{m} MiB' for m in self.allocated_mib)} in 4 MiB extents spread over the disk; one plan, "
            f"policy `speed: {self.speed}`, `max_parallel_disks: {self.parallel}`, `retire_source: keep`, `verify: none`. "
            "Each round, on fresh copies of the sources and fresh VMs: `livecopy validate PLAN --json --db DB` "
            "(its `estimate.seconds`), then `livecopy submit PLAN --db DB`, timed from spawn to exit. "
            f"{len(rounds)} rounds; the database accumulates the rounds' plans (throttled copies are not used "
            "as history, so every estimate rests on the policy speed).", "",
            f"Command: `{command}`", "",
            f"Estimate basis: {first['basis']}. Order and estimated times of round 1: "
            + "; ".join(f"{o['disk']} {o['start_seconds']:.1f}–{o['end_seconds']:.1f} s" for o in first["order"]) + ".", "",
            "| round | estimate (s) | real (s) | estimate / real | validate took (s) |",
            "|---:|---:|---:|---:|---:|",
        ] + [f"| {i + 1} | {r['estimate']:.2f} | {r['real']:.2f} | {r['ratio']:.3f} | {r['validate']:.2f} |"
             for i, r in enumerate(rounds)] + [
            "",
            "| summary | value |", "|---|---:|",
            f"| median estimate / real | {median:.3f} |",
            f"| min / max | {min(ratios):.3f} / {max(ratios):.3f} |",
            f"| worst \\|estimate / real − 1\\| | {worst:.3f} (target ≤ {self.target}: {'met' if met else 'missed'}) |",
            f"| median real − estimate (s) | {statistics.median(r['real'] - r['estimate'] for r in rounds):.2f} |",
            "",
            "Per disk (round 1), from `livecopy show --json`: the copy (the `block-stream` intent to `retiring`) "
            "against allocated bytes / speed, and the whole disk (first transition to `completed`):", "",
            "| disk | allocated (MiB) | bytes / speed (s) | copy (s) | whole disk (s) |", "|---|---:|---:|---:|---:|",
        ] + [f"| {d['disk']} | {d['mib']} | {d['ideal']:.2f} | {d['copy']:.2f} | {d['whole']:.2f} |" for d in first["disks"]] + [
            "",
            "A disk's whole time also counts its wait for a slot after its VM's snapshot, which switches all of "
            "a VM's disks when the first of them starts (the second disk of bench-vm1 waits so). "
            "The real duration includes livecopy's start, the preflight, every VM's snapshot, the flushes, "
            "finalizes and renames, and the process's exit; the estimate counts only allocated bytes / speed on "
            "the schedule. Their difference, over the disks on the plan's critical path, is the per-disk overhead "
            "`validate` could add.",
        ]
        return "\n".join(lines) + "\n"

    def _round(self, ctx, directory, pristines, db, policy, number):
        run_dir = os.path.join(directory, f"r{number:02d}")
        sources, destinations = fresh_run(run_dir, pristines)
        vms = [VM(run_dir, sources[0:2], prefix="vm0"), VM(run_dir, sources[2:4], prefix="vm1")]
        try:
            start_vms(vms)
            plan = os.path.join(run_dir, "plan.yaml")
            write_plan(plan, f"bench-{self.name}-{number}", policy, [
                ("bench-vm0", vms[0].qmp, [("drive0", destinations[0]), ("drive1", destinations[1])]),
                ("bench-vm1", vms[1].qmp, [("drive0", destinations[2]), ("drive1", destinations[3])]),
            ])
            out = os.path.join(run_dir, "validate.out")
            validate_seconds, code, _, _ = timed([ctx.livecopy, "validate", plan, "--json", "--db", db], out)
            text = read_output(out)
            if code != 0:
                raise BenchError(f"livecopy validate exited {code}: {text.strip()[-1500:]}")
            document = json.loads(text)
            allocated = [d["allocated_bytes"] for d in document["disks"]]
            if allocated != [m * MIB for m in self.allocated_mib]:
                raise BenchError(f"validate found allocated bytes {allocated}")
            if any(os.path.exists(d) for d in destinations):
                raise BenchError("validate created a destination")
            estimate = document["estimate"]["seconds"]
            out = os.path.join(run_dir, "submit.out")
            seconds, code, _, _ = timed([ctx.livecopy, "submit", plan, "--db", db], out)
            if code != 0:
                raise BenchError(f"livecopy submit exited {code}: {read_output(out).strip()[-1500:]}")
            vms[0].check_copied(destinations[0:2])
            vms[1].check_copied(destinations[2:4])
            disks = self._disk_times(ctx, db, plan) if number == 1 else []
            return {"estimate": estimate, "real": seconds, "ratio": estimate / seconds, "validate": validate_seconds,
                    "basis": document["estimate"]["description"], "order": document["order"], "disks": disks}
        finally:
            stop_vms(vms)
            shutil.rmtree(run_dir, ignore_errors=True)
            os.sync()

    def _disk_times(self, ctx, db, plan):
        """Per disk of the newest plan: its copy and whole-disk times from its events."""
        from datetime import datetime
        history = json.loads(run([ctx.livecopy, "history", "--json", "--limit", "1", "--db", db]))
        shown = json.loads(run([ctx.livecopy, "show", str(history[0]["id"]), "--json", "--db", db]))

        def at(event):
            return datetime.fromisoformat(event["at"].replace("Z", "+00:00")).timestamp()

        rows = []
        for disk, mib in zip(shown["disks"], self.allocated_mib):
            label = f"{disk['vm']}/{disk['device']}"
            events = [e for e in shown["events"] if e["disk"] == label]
            start = next(at(e) for e in events if e["kind"] == "intent" and e["detail"].startswith("block-stream:"))
            retiring = next(at(e) for e in events if e["kind"] == "transition" and e["to"] == "retiring")
            first = at(events[0])
            completed = next(at(e) for e in events if e["kind"] == "transition" and e["to"] == "completed")
            rows.append({"disk": label, "mib": mib, "ideal": mib * MIB / self.speed_bytes, "copy": retiring - start,
                         "whole": completed - first})
        return rows


scenario(ValidateETA())
