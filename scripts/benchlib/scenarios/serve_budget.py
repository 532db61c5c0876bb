"""Serve's bandwidth budget: two detached plans run by `livecopy serve --bandwidth`
against two raw streams each throttled to half of it."""

import json
import os
import subprocess
import time

from ..common import MIB, RAW_CLIENT, BenchError, log, size_text
from ..images import pattern_pristines
from ..process import read_output, timed
from ..registry import scenario
from ..stats import describe_pairs
from ..timeline import db_rows
from .shared import abba, create_database, in_scratch, pair_rows, pattern_round, warm_up, write_plan, write_policy


class ServeBudget:
    """Two VMs with one fully allocated disk each. A: `livecopy serve --bandwidth B`
    already running, the two plans submitted with `--detach` one after the other (each
    unthrottled by its own policy), timed from the first submit until both plans are
    completed in the store. B: `raw_qmp_copy.py --many --parallel 2 --speed B/2` (the
    split serve reaches once both jobs run), then `sync -f` of the destinations'
    filesystem (livecopy confirms a flush before it finalizes each stream)."""

    name = "serve-budget"
    title = "serve's bandwidth budget"
    default_pairs = 3
    size = 256 * MIB
    budget = 64 * MIB
    patterns = ("0x5a", "0x5b")

    def describe(self):
        return f"{self.title}: 2 VMs × {size_text(self.size)}, `serve --bandwidth {self.budget // MIB}M` vs 2 raw streams at {self.budget // MIB // 2}M"

    def pairs(self, ctx):
        return ctx.pairs_override or self.default_pairs

    def run(self, ctx):
        return in_scratch(ctx, self.name, lambda directory: self._run(ctx, directory))

    def _run(self, ctx, directory):
        pristines = pattern_pristines(directory, self.size, self.patterns)
        db = os.path.join(directory, "livecopy.db")
        create_database(ctx, db)
        policy = os.path.join(directory, "policy.yaml")
        write_policy(policy, speed=0, retire_source="keep", verify="none", progress_interval="200ms")
        settings = os.path.join(directory, "serve.yaml")
        with open(settings, "w") as f:
            f.write(f"bandwidth: {self.budget // MIB}M\npoll_interval: 100ms\n")
        serve_out = open(os.path.join(directory, "serve.out"), "w")
        serve = subprocess.Popen([ctx.livecopy, "serve", "--config", settings, "--db", db],
                                 stdout=serve_out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            warm_up(ctx, self.name, ("livecopy", "raw"),
                    lambda tool: self._one(ctx, directory, pristines, db, policy, 0, tool, False))
            results = []
            for index in range(self.pairs(ctx)):
                pair = {"pair": index + 1, "order": abba(index)}
                for kind in pair["order"]:
                    tool = "livecopy" if kind == "A" else "raw"
                    pair[tool] = self._one(ctx, directory, pristines, db, policy, index + 1, tool, index == 0)
                    log(f"[{self.name}] pair {index + 1} {tool}: {pair[tool]:.3f} s")
                results.append(pair)
        finally:
            serve.terminate()
            code = serve.wait(timeout=60)
            serve_out.close()
        if code != 0:
            raise BenchError(f"serve exited {code} on SIGTERM: {read_output(serve_out.name)[-1500:]}")
        return self._section(ctx, results)

    def _one(self, ctx, directory, pristines, db, policy, number, tool, verify):
        def copy(vms, destinations):
            if tool == "livecopy":
                return self._serve(ctx, run_dir, vms, destinations, db, policy, number)
            plan = os.path.join(run_dir, "plan.json")
            with open(plan, "w") as f:
                json.dump([{"socket": vm.qmp, "device": "drive0", "destination": d} for vm, d in zip(vms, destinations)], f)
            command = (f"{ctx.python} {RAW_CLIENT} --many {plan} --parallel 2 --speed {self.budget // 2} "
                       f"&& sync -f {destinations[0]}")
            seconds, code, _, _ = timed(["sh", "-c", command], os.path.join(run_dir, "raw.out"))
            if code != 0:
                raise BenchError(f"raw exited {code}: {read_output(os.path.join(run_dir, 'raw.out'))[-1500:]}")
            return seconds

        run_dir = os.path.join(directory, f"p{number:02d}{tool[0]}")
        return pattern_round(run_dir, pristines, self.size, self.patterns, verify, copy)

    def _serve(self, ctx, run_dir, vms, destinations, db, policy, number):
        """Submits one detached plan per VM; returns the seconds from the first submit
        until both plans are completed."""
        started = time.perf_counter()
        ids = []
        for n, (vm, destination) in enumerate(zip(vms, destinations)):
            plan = os.path.join(run_dir, f"plan{n}.yaml")
            write_plan(plan, f"bench-{self.name}-{number}-{n}", policy, [(f"bench-vm{n}", vm.qmp, [("drive0", destination)])])
            output = subprocess.run([ctx.livecopy, "submit", "--detach", plan, "--db", db],
                                    capture_output=True, text=True, check=False)
            if output.returncode != 0:
                raise BenchError(f"submit --detach exited {output.returncode}: {output.stderr[-1500:]}")
            ids.append(int(output.stdout.strip()))
        deadline = started + 600
        while time.perf_counter() < deadline:
            states = [db_rows(db, "SELECT state FROM plans WHERE id = ?", (i,))[0][0] for i in ids]
            if all(state == "completed" for state in states):
                return time.perf_counter() - started
            if any(state in ("failed", "needs_attention", "refused", "rolled_back") for state in states):
                raise BenchError(f"serve's plans {ids}: {states}")
            time.sleep(0.02)
        raise BenchError(f"serve's plans {ids} did not complete in 600 s")

    def _section(self, ctx, results):
        s = describe_pairs(results)
        total = 2 * self.size / MIB
        ideal = total / (self.budget / MIB)
        ctx.note("15", "two plans under serve's budget: time / two raw streams at half the budget each",
                 f"{s['ratio_median']:.3f}")
        command = f"scripts/bench {self.name}" + (f" (BENCH_PAIRS={ctx.pairs_override})" if ctx.pairs_override else "")
        lines = [
            f"## {self.name} (issue 15: serve's host bandwidth budget)", "",
            f"Two VMs with one qcow2 disk of {size_text(self.size)} allocated each (patterns "
            f"{', '.join(self.patterns)}). A = `livecopy serve --config serve.yaml` with `bandwidth: "
            f"{self.budget // MIB}M` (started once, untimed), two plans submitted with `--detach` one after "
            "the other, each with an unthrottled policy (`speed: 0`, `retire_source: keep`, `verify: none`), timed from the first "
            "submit until both plans are `completed` in the store (polled every 20 ms). B = `raw_qmp_copy.py --many "
            f"--parallel 2 --speed {self.budget // 2}` (each stream at half the budget, the split serve reaches once "
            "both jobs run), then `sync -f` of the destinations' filesystem, as livecopy confirms a flush before "
            f"it finalizes. {len(results)} pairs in ABBA order after {ctx.warmups} discarded warm-up(s) of each.", "",
            f"Command: `{command}`", "",
        ] + pair_rows(results, "serve", "raw at half") + [
            "",
            "| summary | value |", "|---|---:|",
            f"| bytes / budget (s) | {ideal:.3f} |",
            f"| median, serve (s) | {s['a_median']:.3f} ({total / s['a_median']:.1f} MiB/s of {self.budget // MIB}) |",
            f"| median, raw (s) | {s['b_median']:.3f} ({total / s['b_median']:.1f} MiB/s) |",
            f"| **median ratio serve / raw** | **{s['ratio_median']:.3f}** |",
            f"| ratio min / max | {s['ratio_min']:.3f} / {s['ratio_max']:.3f} |",
            "",
            "Neither arm can beat bytes / budget. serve's time includes two `submit --detach` processes, its poll "
            "for new plans (100 ms), each plan's preflight and snapshot, and the first job running alone at the "
            "whole budget until the second starts (then both at half). The raw client starts both streams at once "
            "at half.",
        ]
        return "\n".join(lines) + "\n"


scenario(ServeBudget())
