"""verify: what the data verification before retirement costs (issue 16). One VM, one
fully written 1 GiB qcow2 disk, copied by `livecopy submit` with the stream strategy,
unthrottled, `retire_source: keep`, under three policies: `verify: none`, `verify: sample`
(the default `verify_sample: 1%`) and `verify: full`. The raw tool's baseline for `full`:
`qemu-img compare` of the same two images after the copy, offline."""

import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time

from ..common import BenchError, GIB, MIB, log, size_text
from ..images import fill_pattern_image, fresh_run, verify_pattern_image
from ..process import read_output, timed
from ..registry import scenario
from ..report import loadavg
from ..timeline import db_rows
from ..vm import VM
from .mirror import rotated
from .shared import create_database, in_scratch, write_plan, write_policy

VARIANTS = ("none", "sample", "full")
CLUSTER = 64 * 1024  # livecopy's comparison unit (QEMU's default qcow2 cluster and bitmap granularity)


def median_range(values, fmt="{:.0f}"):
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))} to {fmt.format(max(values))})"


class VerifyCost:
    """Per round, the three policies on fresh VMs and fresh source copies, in rotating
    order; after each copy, with the VM stopped, `qemu-img compare` of the source and the
    destination (timed) and the pattern read back (untimed)."""

    name = "verify"
    title = "The cost of verify before retirement"
    default_pairs = 7  # rounds, each one run of every policy
    size = 1 * GIB
    pattern = "0x76"
    target = 0.05  # sample: at most 5% of the copy's time

    def describe(self):
        return (f"{self.title}: {size_text(self.size)} uncapped stream, `verify: none` vs `sample` (1%) vs `full`, "
                "and `qemu-img compare` of the same images offline")

    def pairs(self, ctx):
        return ctx.pairs_override or self.default_pairs

    def run(self, ctx):
        return in_scratch(ctx, self.name, lambda directory: self._run(ctx, directory))

    def _run(self, ctx, directory):
        need = 4 * self.size + GIB
        free = shutil.disk_usage(directory).free
        if free < need:
            raise BenchError(f"{directory}: {free // MIB} MiB free, need {need // MIB} MiB")
        load_start = loadavg()
        pristine = os.path.join(directory, "pristine.qcow2")
        log(f"[{self.name}] writing the source image: {size_text(self.size)} of pattern {self.pattern}")
        fill_pattern_image(pristine, self.size, self.pattern)
        db = os.path.join(directory, "livecopy.db")
        create_database(ctx, db)  # create and migrate it once, untimed
        policies = {}
        for variant in VARIANTS:
            policies[variant] = os.path.join(directory, f"policy-{variant}.yaml")
            write_policy(policies[variant], strategy="stream", speed=0, retire_source="keep", verify=variant)

        warmups = []
        for number in range(1, ctx.warmups + 1):
            for variant in VARIANTS:
                result = self._one(ctx, directory, pristine, db, policies, variant, f"w{number}", False)
                warmups.append((variant, result["seconds"]))
                log(f"[{self.name}] warm-up {number}/{ctx.warmups} {variant}: {result['seconds']:.3f} s (discarded)")

        rounds = []
        for index in range(self.pairs(ctx)):
            order = rotated(list(VARIANTS), index)
            runs = {}
            for variant in order:
                result = self._one(ctx, directory, pristine, db, policies, variant, f"{index + 1:02d}", True)
                runs[variant] = result
                log(f"[{self.name}] round {index + 1} {variant}: submit {result['seconds']:.3f} s, stream "
                    f"{result['stream_ms']:.0f} ms, verify step "
                    + (f"{result['verify_ms']:.0f} ms" if result["verify_ms"] is not None else "—")
                    + f"; qemu-img compare {result['compare']:.3f} s")
            rounds.append({"round": index + 1, "order": order, "runs": runs})
        floors = self._floors(directory, pristine)
        return self._section(ctx, rounds, warmups, floors, load_start)

    def _one(self, ctx, directory, pristine, db, policies, variant, label, check):
        """One timed `livecopy submit` of a fresh source copy on a fresh VM; then, the VM
        stopped, a timed `qemu-img compare` of the source and the destination, and (with
        `check`) the pattern read back from the destination."""
        run_dir = os.path.join(directory, f"r{label}-{variant}")
        (source,), (destination,) = fresh_run(run_dir, [pristine])
        vm = VM(run_dir, source)
        try:
            vm.start()
            plan = os.path.join(run_dir, "plan.yaml")
            write_plan(plan, f"bench-{self.name}-{label}-{variant}", policies[variant],
                       [("bench-vm", vm.qmp, [("drive0", destination)])])
            out = os.path.join(run_dir, "submit.out")
            seconds, code, _, spawn_wall = timed([ctx.livecopy, "submit", plan, "--db", db], out)
            if code != 0:
                raise BenchError(f"livecopy submit ({variant}, round {label}) exited {code}:\n"
                                 f"{read_output(out).strip()[-2000:]}\nQEMU log:\n{vm.log()}")
            vm.check_copied(destination)
            result = self._events(db, variant, spawn_wall, seconds)
            result["seconds"] = seconds
            vm.stop()
            compare_out = os.path.join(run_dir, "compare.out")
            compare_argv = ["qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", source, destination]
            result["compare"], code, _, _ = timed(compare_argv, compare_out)
            if code != 0:
                raise BenchError(f"qemu-img compare ({variant}, round {label}) exited {code}: "
                                 f"{read_output(compare_out).strip()[-1000:]}")
            result["compare_said"] = read_output(compare_out).strip()
            if check:
                result["check"] = verify_pattern_image(destination, self.size, self.pattern)
            return result
        finally:
            vm.stop()
            shutil.rmtree(run_dir, ignore_errors=True)
            os.sync()

    def _events(self, db, variant, spawn_wall, seconds):
        """The newest plan's events: where the stream ran, the verify step, the end."""
        plan_id = db_rows(db, "SELECT max(id) FROM plans")[0][0]
        rows = db_rows(db, "SELECT kind, to_state, detail, at FROM events WHERE plan_id = ? AND disk_id IS NOT NULL "
                       "ORDER BY id", (plan_id,))

        def first(kind, prefix=None, to=None):
            for k, to_state, detail, at in rows:
                if k == kind and (prefix is None or detail.startswith(prefix)) and (to is None or to_state == to):
                    return at, detail
            raise BenchError(f"{variant}: no {kind} {prefix or to} event in plan {plan_id}")

        ms = lambda at: (at - spawn_wall) * 1000  # noqa: E731
        stream_started, _ = first("outcome", "block-stream:")
        stream_done, _ = first("intent", "job-finalize:")
        retiring, _ = first("transition", to="retiring")
        completed, completion = first("transition", to="completed")
        if "source kept" not in completion:
            raise BenchError(f"{variant}: the disk completed without keeping its source: {completion}")
        result = {
            "variant": variant, "plan": plan_id,
            "started_ms": ms(stream_started), "stream_ms": (stream_done - stream_started) * 1000,
            "finalize_ms": (retiring - stream_done) * 1000, "retiring_ms": ms(retiring),
            "completed_ms": ms(completed), "exit_ms": seconds * 1000,
            "verify_ms": None, "verify_said_ms": None, "compared": None, "outcome": None,
        }
        verify_rows = [r for r in rows if r[0] in ("intent", "outcome") and r[2].startswith("verify:")]
        if variant == "none":
            if verify_rows:
                raise BenchError(f"verify: none wrote verify events: {verify_rows}")
            return result
        intent, _ = first("intent", "verify:")
        outcome, detail = first("outcome", "verify:")
        if not detail.startswith("verify: identical:"):
            raise BenchError(f"{variant}: the comparison did not find the images identical: {detail}")
        said = re.search(r"in ([0-9.]+) s$", detail)
        counted = re.search(r"identical: (\d+) of (\d+) clusters the guest left alone \(([^)]*)\), (\d+) written", detail)
        if not said or not counted:
            raise BenchError(f"{variant}: unexpected verify outcome: {detail}")
        compared, clean, dirty = int(counted.group(1)), int(counted.group(2)), int(counted.group(4))
        clusters = self.size // CLUSTER
        if clean != clusters or dirty != 0:
            raise BenchError(f"{variant}: expected {clusters} clean clusters and none dirty: {detail}")
        if variant == "full" and compared != clusters:
            raise BenchError(f"full compared {compared} of {clusters} clusters: {detail}")
        result.update({
            "verify_start_ms": ms(intent), "verify_ms": (outcome - intent) * 1000,
            "verify_said_ms": float(said.group(1)) * 1000, "compared": compared, "compared_bytes": counted.group(3),
            "outcome": detail,
        })
        return result

    def _floors(self, directory, pristine, times=5):
        """The fixed costs a comparison pays whatever it reads, timed offline on a copy of
        the source: `qemu-img map` of the image (livecopy reads the source's allocation so,
        and the destination's dirty ranges with `qemu-img map` through NBD) and a
        `qemu-nbd --read-only` serving one client (as livecopy's, without --persistent)."""
        image = os.path.join(directory, "floor.qcow2")
        shutil.copyfile(pristine, image)
        maps, nbd = [], []
        try:
            for _ in range(times):
                started = time.perf_counter()
                subprocess.run(["qemu-img", "map", "-f", "qcow2", "--output=json", image], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                maps.append((time.perf_counter() - started) * 1000)
                nbd.append(self._qemu_nbd_once(image))
        finally:
            os.remove(image)
        return {"map": statistics.median(maps), "nbd_up": statistics.median(n[0] for n in nbd),
                "nbd_client": statistics.median(n[1] for n in nbd), "nbd_down": statistics.median(n[2] for n in nbd)}

    @staticmethod
    def _qemu_nbd_once(image):
        """One `qemu-nbd --read-only` serving one client, as livecopy's: milliseconds from
        its spawn until its socket exists (polled every 1 ms), a `qemu-io` client reading
        one cluster through it (spawn to exit), and from that client's exit until
        qemu-nbd exits by itself."""
        with tempfile.TemporaryDirectory(prefix="bench-nbd.") as private:
            path = os.path.join(private, "s.sock")
            started = time.perf_counter()
            process = subprocess.Popen(["qemu-nbd", "--read-only", "--format=qcow2", f"--socket={path}",
                                        "--export-name=source", "--shared=1", "--", image],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                while not os.path.exists(path):
                    if process.poll() is not None or time.perf_counter() > started + 30:
                        raise BenchError(f"qemu-nbd did not create {path}")
                    time.sleep(0.001)
                up = (time.perf_counter() - started) * 1000
                client = time.perf_counter()
                subprocess.run(["qemu-io", "-r", "-f", "raw", "-c", f"read 0 {CLUSTER}",
                                f"nbd+unix:///source?socket={path}"], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                left = time.perf_counter()
                process.wait(timeout=30)
                return up, (left - client) * 1000, (time.perf_counter() - left) * 1000
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()

    def _section(self, ctx, rounds, warmups, floors, load_start):
        runs = {v: [r["runs"][v] for r in rounds] for v in VARIANTS}
        copy = [r["seconds"] for r in runs["none"]]
        copy_median = statistics.median(copy)

        def added(variant, key):
            """Per round: the variant's figure minus none's in the same round (ms)."""
            return [(r["runs"][variant][key] - r["runs"]["none"][key]) for r in rounds]

        for r in rounds:
            for x in r["runs"].values():
                # The steps verification changes: the switch (its transaction adds the
                # bitmap) up to the copy's start, and the retirement (the verify step, the
                # bitmap's removal) up to the process's exit. Left out: QEMU's copy and
                # its flush and finalize, the same work in every variant, and the most
                # variable (their spread is larger than the sample's cost).
                x["own_ms"] = x["started_ms"] + (x["exit_ms"] - x["retiring_ms"])
        rows = {}
        for v in ("sample", "full"):
            wall = added(v, "exit_ms")
            own = added(v, "own_ms")
            share = [(r["runs"][v]["own_ms"] - r["runs"]["none"]["own_ms"]) / (r["runs"]["none"]["seconds"] * 1000)
                     for r in rounds]
            wall_share = [(r["runs"][v]["seconds"] - r["runs"]["none"]["seconds"]) / r["runs"]["none"]["seconds"]
                          for r in rounds]
            step = [x["verify_ms"] for x in runs[v]]
            rows[v] = {"wall": wall, "own": own, "share": share, "wall_share": wall_share, "step": step,
                       "step_share": [s / (c * 1000) for s, c in zip(step, copy)],
                       "compared": statistics.median(x["compared"] for x in runs[v]),
                       "compared_bytes": runs[v][0]["compared_bytes"]}
        compare = [x["compare"] for v in VARIANTS for x in runs[v]]
        compare_after_full = [x["compare"] for x in runs["full"]]
        sample = rows["sample"]
        sample_share = statistics.median(sample["share"])
        met = sample_share <= self.target
        full = rows["full"]
        ctx.note("16", "verify: `sample` (1%) time added per disk, % of the copy's time (1 GiB uncapped stream; "
                 "median of per-round differences in the steps verification changes)",
                 f"{statistics.median(sample['own']):+.0f} ms = {sample_share:+.2%} of {copy_median:.2f} s "
                 f"(verify step {statistics.median(sample['step']):.0f} ms)",
                 f"≤ {self.target:.0%}", met)
        ctx.note("16", "verify: `full` on 1 GiB, time added per disk, % of the copy's time; `qemu-img compare` "
                 "of the same images offline",
                 f"{statistics.median(full['own']):+.0f} ms = {statistics.median(full['share']):+.1%} "
                 f"(verify step {statistics.median(full['step']):.0f} ms); qemu-img compare "
                 f"{statistics.median(compare) * 1000:.0f} ms")

        command = f"scripts/bench {self.name}"
        if ctx.pairs_override:
            command = f"BENCH_PAIRS={ctx.pairs_override} {command}"
        if ctx.warmups != 1:
            command = f"BENCH_WARMUP={ctx.warmups} {command}"
        n = len(rounds)
        lines = [
            f"## {self.name} (issue 16: the cost of verifying the data before retirement)", "",
            f"One VM (`-machine none`, no guest, so nothing writes during the copy), one qcow2 disk of "
            f"{size_text(self.size)} fully written with pattern {self.pattern} (once, with `qemu-io`; each run gets "
            "a fresh copy, `cp` then `sync`, and a fresh VM). Copied by `livecopy submit` with policy "
            "`strategy: stream`, `speed: 0`, `retire_source: keep` and one of `verify: none`, `verify: sample` "
            "(the default `verify_sample: 1%`: each extent's first and last cluster plus 1% of the others, "
            "drawn at random) or `verify: full` (every allocated cluster the guest left alone). "
            f"{n} rounds of the three, the order rotated every round and reversed every other round, after "
            f"{ctx.warmups} discarded warm-up round(s) of all three. Timed: `livecopy submit`, spawn to exit. "
            "From the store's events of each plan: QEMU's copy (`outcome block-stream` → `intent job-finalize`) "
            "and the verify step (`intent verify` → `outcome verify`). After every run, the VM stopped: "
            "`qemu-img compare -f qcow2 -F qcow2 SRC DST`, timed (the raw tool's full comparison of the same two "
            "images), then the destination read back against the pattern with `qemu-io` (untimed). "
            f"Load average at start: {load_start}; at end: {loadavg()} (2 cores, shared).", "",
            f"Command: `{command}`", "",
            "| round | order | none (s) | sample (s) | full (s) | QEMU's copy, none / sample / full (ms) | "
            "verify step, sample / full (ms) | added per disk, sample / full (ms) | "
            "qemu-img compare after none / sample / full (ms) |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rounds:
            x = r["runs"]
            lines.append(
                f"| {r['round']} | {', '.join(r['order'])} | {x['none']['seconds']:.3f} | {x['sample']['seconds']:.3f} | "
                f"{x['full']['seconds']:.3f} | {x['none']['stream_ms']:.0f} / {x['sample']['stream_ms']:.0f} / "
                f"{x['full']['stream_ms']:.0f} | {x['sample']['verify_ms']:.0f} / {x['full']['verify_ms']:.0f} | "
                f"{x['sample']['own_ms'] - x['none']['own_ms']:+.0f} / "
                f"{x['full']['own_ms'] - x['none']['own_ms']:+.0f} | "
                f"{x['none']['compare'] * 1000:.0f} / {x['sample']['compare'] * 1000:.0f} / "
                f"{x['full']['compare'] * 1000:.0f} |")
        lines += [
            "",
            "Time added per disk: per round, the variant's figure minus `verify: none`'s in the same round, then "
            f"the median (and range) over the {n} rounds; as a share of that round's copy time (`verify: none`'s "
            "submit, spawn to exit). The figure is the time, from the events, of the steps verification changes: "
            "spawn → QEMU's copy started (the switch's transaction also adds the dirty bitmap) plus `retiring` → "
            "process exit (the verify step, then the bitmap's removal). QEMU's copy and its flush and finalize "
            "are left out: the same work in every variant, and their run-to-run spread (the whole submit "
            "difference, below) is larger than the sample's cost.", "",
            "| measure | `verify: sample` | `verify: full` |", "|---|---:|---:|",
            f"| copy time with `verify: none`, submit spawn → exit (s) | {median_range(copy, '{:.3f}')} | (same) |",
            f"| clusters compared (of {self.size // CLUSTER}), bytes read from each side | "
            f"{sample['compared']:.0f} ({sample['compared_bytes']}) | {full['compared']:.0f} ({full['compared_bytes']}) |",
            f"| verify step, `intent verify` → `outcome verify` (ms) | {median_range(sample['step'])} | "
            f"{median_range(full['step'])} |",
            f"| the same, as % of the copy time | {median_range([s * 100 for s in sample['step_share']], '{:.1f}')} | "
            f"{median_range([s * 100 for s in full['step_share']], '{:.1f}')} |",
            f"| **added per disk (ms)** | **{median_range(sample['own'], '{:+.0f}')}** | "
            f"**{median_range(full['own'], '{:+.0f}')}** |",
            f"| **the same, as % of the copy time** | **{median_range([s * 100 for s in sample['share']], '{:+.1f}')}** | "
            f"**{median_range([s * 100 for s in full['share']], '{:+.1f}')}** |",
            f"| added per disk, whole submit time (ms; includes the copy's spread) | "
            f"{median_range(sample['wall'], '{:+.0f}')} | {median_range(full['wall'], '{:+.0f}')} |",
            f"| the same, as % of the copy time | {median_range([s * 100 for s in sample['wall_share']], '{:+.1f}')} | "
            f"{median_range([s * 100 for s in full['wall_share']], '{:+.1f}')} |",
            "",
            f"**Target: `sample` adds at most {self.target:.0%} of the copy's time: "
            f"{'met' if met else 'missed'}** ({sample_share:+.2%}, median over the rounds; "
            f"the verify step alone: {statistics.median(sample['step_share']):.2%}).", "",
            "The raw tool's full comparison, `qemu-img compare -f qcow2 -F qcow2 SRC DST` on the same two images "
            f"with the VM stopped: {median_range([c * 1000 for c in compare])} ms over all {len(compare)} runs "
            f"({median_range([c * 1000 for c in compare_after_full])} ms after the `full` runs, i.e. on the very "
            f"images livecopy had just compared, whose full verify step took {median_range(full['step'])} ms). "
            f"It said: \"{runs['full'][0]['compare_said']}\".", "",
            "What differs between the two full comparisons: livecopy compares only the clusters the source "
            "allocates and the guest left alone since the switch (here all of them, as nothing writes), reading "
            "the destination live through a read-only NBD export from the running QEMU (a frozen copy of the "
            "dirty bitmap, `qemu-img map` of its dirty ranges through NBD) and the source through a `qemu-nbd` of "
            "its own, both sides at once, each on a thread of its own (each range in chunks of at most 4 MiB; "
            "a sampled cluster alone is one 64 KiB request to each side); `qemu-img "
            "compare` opens both files itself, offline, and reads every byte of both images in 2 MiB requests. Both read from the page cache here: the copy has just read the "
            "source and written the destination, and the machine has room for both.", "",
            "Fixed costs a comparison pays whatever it reads (measured offline on a copy of the source, median of "
            f"5): `qemu-img map --output=json` of the image {floors['map']:.0f} ms (livecopy spawns `qemu-img map` "
            "twice: the source's allocation and the destination's dirty ranges through NBD); `qemu-nbd --read-only` "
            f"from spawn until its socket exists {floors['nbd_up']:.0f} ms (livecopy tries to connect every 2 ms), "
            f"a `qemu-io` client reading one cluster through it "
            f"{floors['nbd_client']:.0f} ms, and qemu-nbd's own exit after its client left "
            f"{floors['nbd_down']:.1f} ms.", "",
            "Where a disk's time goes (medians over the rounds, ms since spawn unless Δ):", "",
            "| step | none | sample | full |", "|---|---:|---:|---:|",
        ]

        def med(variant, key):
            values = [x[key] for x in runs[variant] if x.get(key) is not None]
            return f"{statistics.median(values):.0f}" if values else "—"

        def med_delta(variant, later, earlier):
            values = [x[later] - x[earlier] for x in runs[variant] if x.get(later) is not None]
            return f"{statistics.median(values):.0f}" if values else "—"
        for label, render in (
            ("QEMU's copy starts (`outcome block-stream`)", lambda v: med(v, "started_ms")),
            ("Δ QEMU's copy (→ `intent job-finalize`)", lambda v: med(v, "stream_ms")),
            ("Δ flush, finalize (→ `retiring`)", lambda v: med(v, "finalize_ms")),
            ("Δ `retiring` → `intent verify`", lambda v: med_delta(v, "verify_start_ms", "retiring_ms")),
            ("Δ the verify step (→ `outcome verify`)", lambda v: med(v, "verify_ms")),
            ("Δ `retiring` → `completed`", lambda v: med_delta(v, "completed_ms", "retiring_ms")),
            ("Δ `completed` → process exit (the bitmap removed, the process ends)",
             lambda v: med_delta(v, "exit_ms", "completed_ms")),
            ("process exit", lambda v: med(v, "exit_ms")),
        ):
            lines.append(f"| {label} | {render('none')} | {render('sample')} | {render('full')} |")
        lines += [
            "", "The outcome event of the first `sample` run: `" + runs["sample"][0]["outcome"] + "`; of the first "
            "`full` run: `" + runs["full"][0]["outcome"] + "`.", "",
        ]
        if warmups:
            lines += ["Warm-up runs, not counted: " + ", ".join(f"{v} {s:.3f} s" for v, s in warmups) + ".", ""]
        lines += [
            "Checked: every submit exited 0 with its disk `completed` and the source kept; with `verify: none` "
            "no verify event was written; with `sample` and `full` the outcome was `identical`, over "
            f"{self.size // CLUSTER} clean clusters and none written by the guest (`full` compared all of them); "
            "after every run drive0 ran on the destination alone with no job left; every `qemu-img compare` "
            "exited 0 (identical). Offline, QEMU stopped, every destination:",
        ]
        for r in rounds:
            for v in r["order"]:
                lines.append(f"- round {r['round']} {v}: {r['runs'][v]['check']}")
        return "\n".join(lines) + "\n"


scenario(VerifyCost())
