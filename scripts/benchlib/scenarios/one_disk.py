"""1. One disk: one VM, one fully allocated qcow2 disk, livecopy against the raw QMP client."""

import json
import os
import shutil
import statistics
import time

from ..common import BenchError, GIB, MIB, RAW_CLIENT, log, run, size_text
from ..images import copy_pristine, fill_pattern_image, verify_pattern_image
from ..process import cpu_seconds, read_output, timed
from ..registry import scenario
from ..stats import describe_pairs
from ..timeline import livecopy_timeline, median_timeline, timeline_table
from ..vm import VM
from .shared import abba, create_database, warm_up, write_policy


class OneDiskCopy:
    """One VM, one qcow2 disk fully allocated with a byte pattern, copied at `speed`."""

    def __init__(self, name, size, speed_text, speed_bytes, pattern, default_pairs, title, raw_flush=False):
        self.name, self.size, self.pattern, self.title = name, size, pattern, title
        self.speed_text, self.speed_bytes = speed_text, speed_bytes
        self.default_pairs = default_pairs
        self.raw_flush = raw_flush  # B flushes the destination before job-finalize, as livecopy does

    def pairs(self, ctx):
        return ctx.pairs_override or self.default_pairs

    def describe(self):
        return f"{self.title}, {size_text(self.size)}, speed {self.speed_text}, {self.default_pairs} pairs"

    def run(self, ctx):
        pairs_wanted = self.pairs(ctx)
        directory = os.path.join(ctx.work, self.name)
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory)
        need = 3 * self.size + GIB
        free = shutil.disk_usage(directory).free
        if free < need:
            raise BenchError(f"{directory}: {free // MIB} MiB free, need {need // MIB} MiB")
        try:
            return self._run(ctx, directory, pairs_wanted)
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def _run(self, ctx, directory, pairs_wanted):
        pristine = os.path.join(directory, "pristine.qcow2")
        log(f"[{self.name}] writing the source image: {size_text(self.size)} of pattern {self.pattern}")
        started = time.monotonic()
        fill_pattern_image(pristine, self.size, self.pattern)
        log(f"[{self.name}] source ready in {time.monotonic() - started:.1f} s")

        db = os.path.join(directory, "livecopy.db")
        create_database(ctx, db)  # create and migrate it once, untimed
        policy = os.path.join(directory, "policy.yaml")
        write_policy(policy, speed=self.speed_text, retire_source="keep", verify="none")
        warmups = warm_up(ctx, self.name, ("raw", "livecopy"),
                          lambda tool: self._one_run(ctx, directory, pristine, db, policy, 0, tool, False)[0])

        results, verified = [], {}
        for index in range(pairs_wanted):
            order = abba(index)
            pair = {"pair": index + 1, "order": order}
            for kind in order:
                tool = "livecopy" if kind == "A" else "raw"
                verify = tool not in verified
                seconds, extra, check = self._one_run(ctx, directory, pristine, db, policy, index + 1, tool, verify)
                pair[tool] = seconds
                log(f"[{self.name}] pair {index + 1}/{pairs_wanted} {kind} {tool}: {seconds:.3f} s")
                pair[f"{tool}_extra"] = extra
                if check:
                    verified[tool] = f"pair {index + 1}: {check}"
            results.append(pair)
            log(f"[{self.name}] pair {index + 1}/{pairs_wanted} ({order}): livecopy {pair['livecopy']:.3f} s, "
                f"raw {pair['raw']:.3f} s, ratio {pair['livecopy'] / pair['raw']:.3f}, "
                f"difference {(pair['livecopy'] - pair['raw']) * 1000:+.0f} ms")
        return self._section(ctx, results, verified, warmups)

    def _one_run(self, ctx, directory, pristine, db, policy, pair, tool, verify):
        run_dir = os.path.join(directory, f"p{pair:02d}-{tool}")
        os.makedirs(run_dir)
        source = os.path.join(run_dir, "src.qcow2")
        destination = os.path.join(run_dir, "dst.qcow2")
        copy_pristine(pristine, source)
        os.sync()  # the source copy's writeback must not land inside the timed window
        vm = VM(run_dir, source)
        check = None
        try:
            vm.start()
            if tool == "livecopy":
                plan = os.path.join(run_dir, "plan.yaml")
                with open(plan, "w") as f:
                    f.write(f"name: bench-{self.name}-pair{pair}\npolicy: {policy}\nvms:\n"
                            f"  - name: bench-vm\n    qmp: {vm.qmp}\n    disks:\n"
                            f"      - device: drive0\n        destination: {destination}\n")
                argv = [ctx.livecopy, "submit", plan, "--db", db]
            else:
                argv = [ctx.python, RAW_CLIENT, vm.qmp, "drive0", destination,
                        "--speed", str(self.speed_bytes), "--job-id", "bench-raw"]
                if self.raw_flush:
                    argv.append("--flush")
            out_path = os.path.join(run_dir, f"{tool}.out")
            seconds, code, usage, spawn_wall = timed(argv, out_path)
            exit_wall = spawn_wall + seconds
            output = read_output(out_path)
            if code != 0:
                raise BenchError(f"{tool} run (pair {pair}) exited {code}:\n{output.strip()[-2000:]}\n"
                                 f"QEMU log:\n{vm.log()}")
            extra = {"cpu": cpu_seconds(usage), "maxrss_kib": usage.ru_maxrss}
            if tool == "raw":
                outcome = json.loads(output.strip().splitlines()[-1])
                if not outcome.get("ok") or outcome.get("offset") != self.size:
                    raise BenchError(f"raw run (pair {pair}) did not complete cleanly: {outcome}")
                extra.update(outcome["phases"])
                extra["interpreter_start"] = outcome["t0_wall"] - spawn_wall
            else:
                extra["timeline"] = livecopy_timeline(db, spawn_wall, exit_wall)
            vm.check_copied(destination)
            vm.stop()
            if verify:
                log(f"[{self.name}] verifying the {tool} destination offline (qemu-io -r)")
                check = verify_pattern_image(destination, self.size, self.pattern)
            return seconds, extra, check
        finally:
            vm.stop()
            shutil.rmtree(run_dir, ignore_errors=True)
            os.sync()

    def _section(self, ctx, results, verified, warmups):
        s = describe_pairs(results)
        n = len(results)
        if self.raw_flush:
            ctx.note("1 (diagnosis)", f"{self.name}: livecopy − raw client that also flushes before finalize",
                     f"{s['diff_median_ms']:+.0f} ms (ratio {s['ratio_median']:.3f})")
        elif self.speed_bytes:
            ctx.note("1", f"{self.name}: median ratio livecopy / raw ({size_text(self.size)} at {self.speed_text})",
                     f"{s['ratio_median']:.3f} ({s['diff_median_ms']:+.0f} ms)", "≤ 1.02 (≤ 80 ms)",
                     s["ratio_median"] <= 1.02 and s["diff_median_ms"] <= 80)
        else:
            ctx.note("1", f"{self.name}: median ratio livecopy / raw ({size_text(self.size)} uncapped, {n} pairs)",
                     f"{s['ratio_median']:.3f} (spread {s['ratio_min']:.3f}–{s['ratio_max']:.3f})", "≤ 1.03",
                     s["ratio_median"] <= 1.03)
        command = f"scripts/bench {self.name}"
        if ctx.pairs_override:
            command = f"BENCH_PAIRS={ctx.pairs_override} {command}"
        if ctx.warmups != 1:
            command = f"BENCH_WARMUP={ctx.warmups} {command}"
        lines = [
            f"## {self.name}", "",
            f"{self.title}: one VM, one qcow2 disk with {size_text(self.size)} allocated "
            f"(pattern {self.pattern}), copied at speed {self.speed_text}"
            f"{' (unlimited)' if self.speed_bytes == 0 else f' ({self.speed_bytes} B/s)'}; "
            f"{n} pairs in ABBA order; A = `livecopy submit` (policy `speed: {self.speed_text}`, "
            f"`retire_source: keep`, `verify: none`), B = `scripts/raw_qmp_copy.py`"
            + (" --flush`: the raw recipe plus what livecopy does for durability — `auto-finalize: false`, "
               "at `pending` an HMP `qemu-io drive0 \"flush\"`, then `job-finalize` — so that A − B is what "
               "livecopy adds besides that flush." if self.raw_flush else "."), "",
            f"Command: `{command}`", "",
            "| pair | order | livecopy (s) | raw QMP (s) | livecopy / raw | livecopy − raw (ms) |",
            "|---:|:---:|---:|---:|---:|---:|",
        ]
        for p in results:
            lines.append(f"| {p['pair']} | {p['order']} | {p['livecopy']:.3f} | {p['raw']:.3f} | "
                         f"{p['livecopy'] / p['raw']:.3f} | {(p['livecopy'] - p['raw']) * 1000:+.0f} |")
        lines += [
            "", "| summary | value |", "|---|---:|",
            f"| median livecopy (s) | {s['a_median']:.3f} |",
            f"| median raw QMP (s) | {s['b_median']:.3f} |",
            f"| livecopy min / max (s) | {s['a_min']:.3f} / {s['a_max']:.3f} |",
            f"| raw min / max (s) | {s['b_min']:.3f} / {s['b_max']:.3f} |",
            f"| **median ratio livecopy / raw** (per pair) | **{s['ratio_median']:.3f}** |",
            f"| ratio min / max | {s['ratio_min']:.3f} / {s['ratio_max']:.3f} |",
            f"| ratio of the medians | {s['ratio_of_medians']:.3f} |",
            f"| **overhead: median per-pair difference (ms)** | **{s['diff_median_ms']:+.0f}** |",
            f"| difference min / max (ms) | {s['diff_min_ms']:+.0f} / {s['diff_max_ms']:+.0f} |",
            f"| difference of the medians (ms) | {s['median_diff_ms']:+.0f} |",
        ]
        if warmups:
            lines += ["", "Warm-up runs before the pairs, not counted: "
                      + ", ".join(f"{tool} {seconds:.3f} s" for tool, seconds in warmups) + "."]
        phases = [p["raw_extra"] for p in results if p.get("raw_extra")]
        if phases:
            def med(key):
                return statistics.median(ph[key] for ph in phases) * 1000
            lines += [
                "", "Raw client, median time since its first line ran, i.e. after interpreter start-up (ms): "
                f"connected {med('connected'):.0f}, snapshot done {med('snapshot'):.0f}, "
                f"stream started {med('stream_started'):.0f}, BLOCK_JOB_COMPLETED {med('completed'):.0f}, "
                + (f"flush done {med('flushed'):.0f}, " if self.raw_flush else "") +
                f"dismissed {med('dismissed'):.0f}; interpreter start-up before that (spawn to first line) "
                f"{med('interpreter_start'):.0f} ms.",
            ]
        timeline = median_timeline([p["livecopy_extra"]["timeline"] for p in results])
        if timeline:
            a_cpu = statistics.median(p["livecopy_extra"]["cpu"] for p in results)
            b_cpu = statistics.median(p["raw_extra"]["cpu"] for p in results)
            a_rss = max(p["livecopy_extra"]["maxrss_kib"] for p in results) / 1024
            lines += [
                "", "Where livecopy's time goes: every step it persists is an event row with a wall-clock "
                "timestamp, so each run's timeline is read back from the database (medians over the pairs; "
                "the copy itself is `outcome block-stream` → `intent job-finalize`, which is written when the "
                "job reaches `pending`). The raw client's copy is stream started → BLOCK_JOB_COMPLETED.", "",
            ] + timeline_table(timeline) + [
                "", f"livecopy process CPU (user+sys, median) {a_cpu * 1000:.0f} ms, peak RSS {a_rss:.1f} MiB; "
                f"raw client CPU {b_cpu * 1000:.0f} ms.",
            ]
            labels = [label for label, _ in timeline]
            at = dict(timeline)
            if phases and "outcome block-stream" in at and "intent job-finalize" in at:
                lc_copy = at["intent job-finalize"] - at["outcome block-stream"]
                raw_done = "pending" if self.raw_flush else "completed"
                raw_copy = med(raw_done) - med("stream_started")
                raw_start = med("interpreter_start") + med("stream_started")
                after = at["process exit"] - at["intent job-finalize"]
                flush = (at.get("outcome job-finalize", at["intent job-finalize"]) - at["intent job-finalize"])
                raw_after = med("dismissed") - med(raw_done)
                raw_flush = f"{med('completed') - med('pending'):.0f}" if self.raw_flush else "—"
                lines += [
                    "", "| phase | livecopy (ms) | raw client (ms) | livecopy − raw (ms) |", "|---|---:|---:|---:|",
                    f"| spawn → stream job started | {at['outcome block-stream']:.0f} | {raw_start:.0f} | "
                    f"{at['outcome block-stream'] - raw_start:+.0f} |",
                    f"| the copy (job started → job done) | {lc_copy:.0f} | {raw_copy:.0f} | {lc_copy - raw_copy:+.0f} |",
                    f"| job done → process exit | {after:.0f} | {raw_after:.0f} | {after - raw_after:+.0f} |",
                    f"| of which flush + job-finalize (to BLOCK_JOB_COMPLETED for raw) | {flush:.0f} | {raw_flush} | |",
                ]
                del labels
        lines += ["", "Checked: every livecopy run exited 0; every raw run saw BLOCK_JOB_COMPLETED with "
                  "offset = len and no error; after every run drive0 ran on the destination alone with no "
                  "job left (query-block, query-jobs on the second monitor). Offline, QEMU stopped:"]
        for tool in ("livecopy", "raw"):
            lines.append(f"- {tool} destination, {verified.get(tool, 'not verified')}")
        return "\n".join(lines) + "\n"


scenario(OneDiskCopy(
    "one-disk-capped", 1 * GIB, "256M", 256 * MIB, "0x5a", 5,
    "Rate-capped copy"))
scenario(OneDiskCopy(
    "one-disk-capped-flushing-raw", 1 * GIB, "256M", 256 * MIB, "0x5b", 5,
    "Rate-capped copy against a raw client that also flushes the destination before finalizing, "
    "as livecopy does (diagnosis: what durability costs each side)", raw_flush=True))
scenario(OneDiskCopy(
    "one-disk-uncapped", 2 * GIB, "0", 0, "0x6b", 7,
    "Unlimited copy"))
