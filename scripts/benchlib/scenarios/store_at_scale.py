"""5. Store at scale: livecopy's read commands on a synthesised database."""

import json
import os
import shutil
import statistics

from ..common import BenchError, MIB, log, run
from ..process import read_output, timed
from ..registry import scenario
from .shared import in_scratch
from ..report import startup_floor
from ..timeline import db_rows


class StoreAtScale:
    name = "store-at-scale"
    title = "Store at scale"
    runs = 11
    disks_per_plan = 3

    def describe(self):
        return f"{self.title}: latency of history/status/show/recover on a 100k-plan database; transitions/s"

    def pairs(self, ctx):
        return ctx.pairs_override or self.runs

    def run(self, ctx):
        return in_scratch(ctx, self.name, lambda directory: self._run(ctx, directory))

    def _run(self, ctx, directory):
        plans = int(os.environ.get("BENCH_STORE_PLANS") or 100_000)
        runs = max(7, self.pairs(ctx))
        big = os.path.join(directory, "big.db")
        small = os.path.join(directory, "small.db")
        log(f"[{self.name}] synthesising {plans} plans × {self.disks_per_plan} disks through the store API")
        synth = json.loads(run([ctx.benchkit, "synth", "--db", big, "--plans", str(plans),
                                "--disks-per-plan", str(self.disks_per_plan)]).strip().splitlines()[-1])
        log(f"[{self.name}] synthesised in {synth['seconds']:.1f} s, {synth['db_bytes'] // MIB} MiB")
        json.loads(run([ctx.benchkit, "synth", "--db", small, "--plans", "10",
                        "--disks-per-plan", str(self.disks_per_plan)]).strip().splitlines()[-1])
        counts = {table: db_rows(big, f"SELECT count(*) FROM {table}")[0][0] for table in ("plans", "disks", "events")}
        middle = plans // 2
        commands = [
            ("history --limit 50", ["history", "--limit", "50"], None),
            ("status", ["status"], None),
            (f"show ID (plan {middle}; small db: plan 5)", ["show", str(middle)], ["show", "5"]),
            ("recover (nothing to do)", ["recover"], None),
        ]
        for _, argv, small_argv in commands:  # one untimed run each: page cache warm, migrations applied
            run([ctx.livecopy] + argv + ["--db", big])
            run([ctx.livecopy] + (small_argv or argv) + ["--db", small])
        floor = startup_floor([ctx.livecopy, "--help"], runs)
        rows = []
        for label, argv, small_argv in commands:
            times = {"big": [], "small": []}
            for index in range(runs):
                for kind in ("big", "small") if index % 2 == 0 else ("small", "big"):
                    db = big if kind == "big" else small
                    args = argv if kind == "big" else (small_argv or argv)
                    out = os.path.join(directory, "out")
                    seconds, code, _, _ = timed([ctx.livecopy] + args + ["--db", db], out)
                    if code != 0:
                        raise BenchError(f"livecopy {' '.join(args)} --db {db} exited {code}: {read_output(out)[-1000:]}")
                    times[kind].append(seconds * 1000)
            rows.append((label, times))
            log(f"[{self.name}] {label}: median {statistics.median(times['big']):.1f} ms "
                f"(small db {statistics.median(times['small']):.1f} ms)")
        for label, times in rows:
            median = statistics.median(times["big"])
            ctx.note("5", f"`livecopy {label.split(' (')[0]}` on {counts['plans']} plans / {counts['disks']} disks",
                     f"{median:.1f} ms", "≤ 100 ms", median <= 100)
        fresh = os.path.join(directory, "transitions.db")
        transitions = json.loads(run([ctx.benchkit, "transitions", "--db", fresh, "--seconds", "3"]).strip().splitlines()[-1])
        loaded = json.loads(run([ctx.benchkit, "transitions", "--db", big, "--seconds", "3"]).strip().splitlines()[-1])
        log(f"[{self.name}] transitions: {transitions['per_second']:.0f}/s on a fresh db, "
            f"{loaded['per_second']:.0f}/s on the big one")
        ctx.note("5", "store transitions/s with synchronous=FULL (fresh db; 100k-plan db)",
                 f"{transitions['per_second']:.0f}; {loaded['per_second']:.0f}")
        lines = [
            f"## {self.name} (issue 5, figure 5)", "",
            f"A database synthesised by `livecopy-benchkit synth` through `SQLiteStore`'s own `WorkflowStore` "
            f"calls (`insertPlan`, `acquireLease`, `save(plan:)`, `save(disk:)` for every transition, intent and "
            f"outcome a forward copy writes, `saveProgress`, `appendEvent`, `releaseLease`), {500} plans per "
            f"`SQLiteStore.batch` transaction: {counts['plans']} finished plans (97% completed, 2% rolled back, "
            f"1% refused), {counts['disks']} disks, {counts['events']} events, "
            f"{synth['db_bytes'] / MIB:.0f} MiB; synthesised in {synth['seconds']:.1f} s. Baseline in the same "
            f"invocation: the same commands on a database of 10 such plans. Each command: {runs} runs per database, "
            "alternating, after one untimed run; timed from spawn to exit, so process start is included.", "",
            f"Command: `scripts/bench {self.name}`", "",
            "| command (`livecopy … --db DB`) | median (ms) | min / max (ms) | 10-plan db median (ms) | target |",
            "|---|---:|---:|---:|---|",
        ]
        for label, times in rows:
            big_median = statistics.median(times["big"])
            lines.append(f"| `{label}` | **{big_median:.1f}** | {min(times['big']):.1f} / {max(times['big']):.1f} | "
                         f"{statistics.median(times['small']):.1f} | ≤ 100 ms: {'met' if big_median <= 100 else 'MISSED'} |")
        lines += [
            "", f"Process start-up floor in this scenario: `livecopy --help` {floor:.1f} ms (median of {runs}).", "",
            "Transitions per second the store sustains (`livecopy-benchkit transitions`: one `save(disk:)` "
            "compare-and-set plus its event row per transaction, as `DiskLedger.transition` writes them, "
            "single writer, for 3 s; `PRAGMA synchronous` read back from the store's connection: "
            f"{transitions.get('synchronous_level', '?')}, i.e. FULL):", "",
            "| database | transitions/s | median latency (ms) | p99 latency (ms) |", "|---|---:|---:|---:|",
            f"| fresh | {transitions['per_second']:.0f} | {transitions['median_ms']:.2f} | {transitions['p99_ms']:.2f} |",
            f"| the synthesised {counts['plans']}-plan db | {loaded['per_second']:.0f} | {loaded['median_ms']:.2f} | "
            f"{loaded['p99_ms']:.2f} |",
        ]
        return "\n".join(lines) + "\n"


scenario(StoreAtScale())
