"""7. The mirror strategy: tuning of blockdev-mirror (opt-in), livecopy's mirror against the
raw durable mirror client, stream and qemu-img convert, convergence under guest-like
writes, and the per-disk cost over many disks."""

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

from ..common import BenchError, GIB, MIB, RAW_CLIENT, SCRIPTS, log, raw_qmp_copy, size_text
from ..images import copy_pristine, fill_pattern_image, verify_pattern_image
from ..process import read_output, timed
from ..registry import scenario
from ..report import loadavg
from ..stats import describe_pairs, pct
from ..timeline import db_rows, livecopy_timeline, median_timeline, timeline_table
from ..vm import VM
from .many_disks import ManyDisks
from .shared import create_database, in_scratch, pair_rows, warm_up, write_plan, write_policy

WRITER = os.path.join(SCRIPTS, "nbd_writer.py")

KIB = 1 << 10
# The image size of this module's one-disk scenarios; BENCH_MIRROR_MIB overrides it (for
# smoke tests with small images).
MIRROR_SIZE = int(os.environ.get("BENCH_MIRROR_MIB") or 2048) * MIB


def human(size):
    if size is None:
        return "default"
    if size % MIB == 0:
        return f"{size // MIB} MiB"
    return f"{size // KIB} KiB"


class Arm:
    """One way of copying the VM's disk (or, for convert, the image offline).

    kind: "raw" (scripts/raw_qmp_copy.py with `args`), "livecopy" (`livecopy submit`
    with the policy `settings`), "convert" (`qemu-img convert` argv built by `convert`),
    or "none" (no copy: the convergence scenario's baseline)."""

    def __init__(self, key, label, kind, args=(), settings=None, fmt="qcow2", convert=None, vm_cache=None):
        self.key, self.label, self.kind = key, label, kind
        self.vm_cache = vm_cache  # the VM's -drive cache= (None: writeback, QEMU's default)
        self.args = list(args)
        self.settings = settings or {}
        self.fmt = fmt
        self.convert = convert


def raw_mirror_args(buf_size=None, granularity=None, copy_mode="background", fmt="qcow2", direct=False, match_cache=True):
    """The raw client doing livecopy's durable mirror recipe: a confirmed flush at READY
    and again in pending, the target opened with the source's cache settings (unless
    `direct` forces O_DIRECT, a probe)."""
    args = ["--blockdev-mirror", "--copy-mode", copy_mode, "--format", fmt, "--flush-at-pending"]
    args += ["--target-direct"] if direct else (["--match-source-cache"] if match_cache else [])
    if buf_size is not None:
        args += ["--buf-size", str(buf_size)]
    if granularity is not None:
        args += ["--granularity", str(granularity)]
    return args


def convert_none(source, destination):
    """Durable by itself: O_DIRECT writes, and the image is flushed when it is closed."""
    return ["qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", "-t", "none", source, destination]


def convert_writeback(source, destination):
    """Durable by itself: page-cache writes, flushed (fdatasync) when the image is closed."""
    return ["qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", "-t", "writeback", source, destination]


def convert_then_sync(source, destination):
    """qemu-img convert's default target cache mode is `unsafe` (no flush at all), so
    durable = convert, then fsync of the file (coreutils `sync FILE`), in one process tree."""
    return ["sh", "-c", 'qemu-img convert -f qcow2 -O qcow2 "$1" "$2" && sync "$2"', "sh", source, destination]


def rotated(tools, index):
    """The tools in the order of round `index`: rotated by one every round and reversed
    every other round, so each tool runs early and late, before and after each other."""
    order = list(tools[index % len(tools):] + tools[:index % len(tools)])
    if index % 2:
        order.reverse()
    return order


class SingleDisk:
    """Helpers for the one-VM, one-disk scenarios of this module."""

    size = MIRROR_SIZE
    pattern = "0x6d"

    @property
    def arms(self):
        """The scenario's arms, or those of them BENCH_MIRROR_ARMS names (comma-separated
        keys; for smoke tests)."""
        wanted = os.environ.get("BENCH_MIRROR_ARMS")
        if not wanted:
            return self.all_arms
        keys = wanted.split(",")
        return [arm for arm in self.all_arms if arm.key in keys]

    def pairs(self, ctx):
        return ctx.pairs_override or self.default_pairs

    def run(self, ctx):
        return in_scratch(ctx, self.name, lambda directory: self._prepare_and_run(ctx, directory))

    def _prepare_and_run(self, ctx, directory):
        need = 3 * self.size + GIB
        free = shutil.disk_usage(directory).free
        if free < need:
            raise BenchError(f"{directory}: {free // MIB} MiB free, need {need // MIB} MiB")
        self.pristine = os.path.join(directory, "pristine.qcow2")
        log(f"[{self.name}] writing the source image: {size_text(self.size)} of pattern {self.pattern}")
        fill_pattern_image(self.pristine, self.size, self.pattern)
        self.db = os.path.join(directory, "livecopy.db")
        self.policies = {}
        if any(arm.kind == "livecopy" for arm in self.arms):
            create_database(ctx, self.db)  # create and migrate it once, untimed
            for arm in self.arms:
                if arm.kind == "livecopy":
                    path = os.path.join(directory, f"policy-{arm.key}.yaml")
                    write_policy(path, speed=0, retire_source="keep", verify="none", **arm.settings)
                    self.policies[arm.key] = path
        return self._run(ctx, directory)

    def one_copy(self, ctx, directory, arm, number, verify, during=None):
        """One timed copy by `arm` in a fresh run directory with a fresh source copy (and,
        for a live arm, a fresh VM). `during(vm, run_dir)`, if given, returns an object
        with start() before the timed copy and finish(result) after it (the convergence
        scenario's writer). Returns a dict: seconds, spawn_wall, phases (raw), timeline
        (livecopy), check (offline verification, when asked)."""
        run_dir = os.path.join(directory, f"r{number:02d}-{arm.key}")
        os.makedirs(run_dir)
        source = os.path.join(run_dir, "src.qcow2")
        destination = os.path.join(run_dir, "dst." + ("img" if arm.fmt == "raw" else "qcow2"))
        copy_pristine(self.pristine, source)
        os.sync()  # the source copy's writeback must not land inside the timed window
        vm = helper = None
        result = {"arm": arm.key}
        try:
            out = os.path.join(run_dir, "out")
            if arm.kind == "convert":
                argv = arm.convert(source, destination)
            else:
                vm = VM(run_dir, source, cache=arm.vm_cache)
                vm.start()
                if arm.kind == "livecopy":
                    plan = os.path.join(run_dir, "plan.yaml")
                    disk = ("drive0", destination) if arm.fmt == "qcow2" else ("drive0", destination, arm.fmt)
                    write_plan(plan, f"bench-{self.name}-{number}-{arm.key}", self.policies[arm.key],
                               [("bench-vm", vm.qmp, [disk])])
                    argv = [ctx.livecopy, "submit", plan, "--db", self.db]
                elif arm.kind == "raw":
                    argv = [ctx.python, RAW_CLIENT, vm.qmp, "drive0", destination, "--speed", "0",
                            "--job-id", "bench-raw"] + arm.args
                else:
                    argv = None
                if during:
                    helper = during(vm, run_dir)
                    helper.start()
            if argv:
                seconds, code, _, spawn_wall = timed(argv, out)
            else:
                spawn_wall = time.time()
                time.sleep(self.idle_seconds)
                seconds, code = time.time() - spawn_wall, 0
            result.update(seconds=seconds, spawn_wall=spawn_wall)
            output = read_output(out)
            if helper:
                helper.finish(result)
            if code != 0:
                raise BenchError(f"{arm.key} (run {number}) exited {code}: {output.strip()[-1500:]}"
                                 + (f"\nQEMU log:\n{vm.log()}" if vm else ""))
            if arm.kind == "raw":
                outcome = json.loads(output.strip().splitlines()[-1])
                if not outcome.get("ok") or outcome.get("offset") != outcome.get("len"):
                    raise BenchError(f"raw run {number} did not complete cleanly: {outcome}")
                result["phases"] = outcome["phases"]
                result["interpreter_start"] = outcome["t0_wall"] - spawn_wall
            elif arm.kind == "livecopy":
                result["timeline"] = livecopy_timeline(self.db, spawn_wall, spawn_wall + seconds)
                result["held_ms"] = guest_io_held_ms(self.db)
            if vm:
                if arm.kind != "none":
                    vm.check_copied(destination)
                vm.stop()
            if verify and arm.kind != "none":
                log(f"[{self.name}] verifying the {arm.key} destination offline")
                if helper and hasattr(helper, "verify"):
                    result["check"] = helper.verify(destination, arm.fmt)
                else:
                    result["check"] = verify_pattern_image(destination, self.size, self.pattern, arm.fmt)
            return result
        finally:
            if helper:
                helper.close()  # before vm.stop: it holds the bench's monitor
            if vm:
                vm.stop()
            shutil.rmtree(run_dir, ignore_errors=True)
            os.sync()


def guest_io_held_ms(db):
    """What livecopy's mirror recorded of its newest plan's pivot: "guest I/O held for N ms"
    (block-job-complete → job-finalize done), or None."""
    rows = db_rows(db, "SELECT detail FROM events WHERE plan_id = (SELECT max(id) FROM plans) "
                       "AND detail LIKE '%guest I/O held for%' ORDER BY id")
    for (detail,) in rows:
        match = re.search(r"guest I/O held for (\d+) ms", detail)
        if match:
            return int(match.group(1))
    return None


def describe_arms_line(arms):
    line = "; ".join(f"**{arm.key}** = {arm.label}" for arm in arms)
    if any(arm.kind == "livecopy" for arm in arms):
        line += " (every livecopy arm's policy also sets `speed: 0`, `retire_source: keep`, `verify: none`)"
    return line


def median_or_dash(values, fmt="{:.3f}"):
    values = [v for v in values if v is not None]
    return fmt.format(statistics.median(values)) if values else "—"


# --------------------------------------------------------------------------- 7a. tuning


class MirrorTuning(SingleDisk):
    """The raw durable mirror client over a grid of buf-size × granularity, against
    qemu-img convert made durable three ways. Opt-in: `scripts/bench mirror-tuning`."""

    name = "mirror-tuning"
    title = "blockdev-mirror tuning"
    default_pairs = 4
    opt_in = True
    pattern = "0x6e"
    buf_sizes = (None, 4 * MIB, 32 * MIB, 64 * MIB)
    granularities = (None, 64 * KIB, 1 * MIB)

    def __init__(self):
        self.all_arms = []
        for buf in self.buf_sizes:
            for gran in self.granularities:
                key = f"mirror-b{human(buf).replace(' ', '')}-g{human(gran).replace(' ', '')}"
                self.all_arms.append(Arm(key, f"raw durable mirror, buf-size {human(buf)}, granularity {human(gran)}",
                                     "raw", raw_mirror_args(buf, gran)))
                self.all_arms[-1].buf, self.all_arms[-1].gran = buf, gran
        # A probe beyond livecopy's recipe: the target opened O_DIRECT (cache.direct), as
        # `convert -t none` writes; the VM would then run on an O_DIRECT node after the pivot.
        for buf in (None, 32 * MIB):
            self.all_arms.append(Arm(f"mirror-direct-b{human(buf).replace(' ', '')}",
                                     f"raw durable mirror, target `cache.direct: true`, buf-size {human(buf)}, "
                                     "granularity default", "raw", raw_mirror_args(buf, direct=True)))
        # A VM started with cache=none, its target opened with the source's cache settings
        # (what keeps the guest's cache mode across the pivot), against the default target.
        self.all_arms.append(Arm("mirror-cachenone-match", "VM `cache=none`; raw durable mirror, target opened "
                                 "with the source's cache settings (`--match-source-cache`: direct)", "raw",
                                 raw_mirror_args(), vm_cache="none"))
        self.all_arms.append(Arm("mirror-cachenone-default", "VM `cache=none`; raw durable mirror, target with "
                                 "blockdev-add's default cache (writeback, livecopy at c0b69f2)", "raw",
                                 raw_mirror_args(match_cache=False), vm_cache="none"))
        # The other destination format livecopy offers (`format: raw`): no qcow2 metadata.
        self.all_arms.append(Arm("mirror-rawfmt-bdefault", "raw durable mirror into a **raw** destination "
                                 "(`--format raw`: O_EXCL + ftruncate), QEMU's defaults", "raw",
                                 raw_mirror_args(fmt="raw"), fmt="raw"))
        self.all_arms += [
            Arm("convert-t-none", "`qemu-img convert -O qcow2 -t none` (O_DIRECT, flushed at close)", "convert",
                convert=convert_none),
            Arm("convert-t-writeback", "`qemu-img convert -O qcow2 -t writeback` (flushed at close)", "convert",
                convert=convert_writeback),
            Arm("convert+sync", "`qemu-img convert -O qcow2` (cache unsafe), then `sync FILE` (fsync)", "convert",
                convert=convert_then_sync),
        ]

    def describe(self):
        return (f"{self.title} (opt-in): {size_text(self.size)}, raw durable mirror over buf-size "
                f"{{{', '.join(human(b) for b in self.buf_sizes)}}} × granularity "
                f"{{{', '.join(human(g) for g in self.granularities)}}}, an O_DIRECT target, and durable "
                "qemu-img convert (BENCH_MIRROR_ARMS=key,... runs some arms only)")

    def _run(self, ctx, directory):
        rounds = self.pairs(ctx)
        load_start = loadavg()
        keys = [arm.key for arm in self.arms]
        by_key = {arm.key: arm for arm in self.arms}
        for key in [k for k in ("mirror-bdefault-gdefault", "convert-t-none") if k in by_key]:  # warm-up, discarded
            seconds = self.one_copy(ctx, directory, by_key[key], 0, False)["seconds"]
            log(f"[{self.name}] warm-up {key}: {seconds:.3f} s (discarded)")
        results = {key: [] for key in keys}
        checks = {}
        for index in range(rounds):
            for key in rotated(keys, index):
                arm = by_key[key]
                result = self.one_copy(ctx, directory, arm, index + 1, key not in checks)
                if "check" in result:
                    checks[key] = result["check"]
                results[key].append(result)
                log(f"[{self.name}] round {index + 1}/{rounds} {key}: {result['seconds']:.3f} s")
        return self._section(ctx, rounds, results, checks, load_start, loadavg())

    def _section(self, ctx, rounds, results, checks, load_start, load_end):
        med = {key: statistics.median(r["seconds"] for r in rs) for key, rs in results.items()}
        raws = [a for a in self.arms if a.kind == "raw"]
        base = med.get("mirror-bdefault-gdefault") or med[raws[0].key]
        best_convert = min((med[a.key] for a in self.arms if a.kind == "convert"), default=float("nan"))

        def phase(rs, a, b):
            return statistics.median((r["phases"][b] - r["phases"][a]) * 1000 for r in rs)
        command = f"scripts/bench {self.name}" + (f" (BENCH_PAIRS={ctx.pairs_override})" if ctx.pairs_override else "")
        lines = [
            f"## {self.name}", "",
            f"One qcow2 image with {size_text(self.size)} allocated (pattern {self.pattern}) copied uncapped, on the "
            "work dir's file system, by the raw durable mirror client (`raw_qmp_copy.py --blockdev-mirror`: the "
            "recipe of livecopy's `strategy: mirror`, target flushed with evidence before `block-job-complete`) "
            "for every buf-size × granularity (\"default\" = not sent: QEMU uses 16 MiB and the target's cluster "
            "size, 64 KiB), and by `qemu-img convert` made durable three ways. "
            f"{rounds} rounds; the order rotates every round and every other round is reversed. Each run: fresh "
            "source copy (`cp`, `sync`, untimed), fresh VM; timed: the tool's process, spawn to exit. "
            f"Load average at start / end: {load_start} / {load_end} (2 cores shared with other builds).", "",
            f"Command: `{command}`", "",
            "| arm | median (s) | min / max (s) | MiB/s | / default mirror | copy to READY (ms) | flush (ms) | "
            "complete → dismissed (ms) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for arm in self.arms:
            rs = results[arm.key]
            seconds = [r["seconds"] for r in rs]
            if arm.kind == "raw":
                extra = (f"{phase(rs, 'stream_started', 'ready'):.0f} | {phase(rs, 'ready', 'flushed'):.0f} | "
                         f"{phase(rs, 'flushed', 'dismissed'):.0f}")
            else:
                extra = "— | — | —"
            lines.append(f"| {arm.label} | {med[arm.key]:.3f} | {min(seconds):.3f} / {max(seconds):.3f} | "
                         f"{self.size / MIB / med[arm.key]:.0f} | {med[arm.key] / base:.3f} | {extra} |")
        fastest = min(raws, key=lambda a: med[a.key])
        ctx.note("mirror", "mirror-tuning: fastest raw mirror setting / QEMU's defaults (median s)",
                 f"{fastest.key}: {med[fastest.key]:.3f} / {base:.3f}; best durable convert {best_convert:.3f}")
        lines += ["", f"Fastest mirror setting: {fastest.label}, {med[fastest.key]:.3f} s against {base:.3f} s with "
                  f"QEMU's defaults ({med[fastest.key] / base:.3f}×); fastest durable convert {best_convert:.3f} s.",
                  "", "Checked offline (first run of each arm):"]
        lines += [f"- {key}: {check}" for key, check in checks.items()]
        return "\n".join(lines) + "\n"


scenario(MirrorTuning())


# --------------------------------------------------------------------------- 7b. uncapped


class MirrorUncapped(SingleDisk):
    """livecopy's mirror against the raw durable mirror client, livecopy's stream, the raw
    durable stream client and durable qemu-img convert: one 2 GiB image, uncapped."""

    name = "mirror-uncapped"
    title = "Mirror, uncapped"
    default_pairs = 5
    pattern = "0x6d"

    def __init__(self):
        self.all_arms = [
            Arm("livecopy-mirror", "`livecopy submit`, policy `strategy: mirror`, `copy_mode: background`",
                "livecopy", settings={"strategy": "mirror", "copy_mode": "background"}),
            Arm("raw-mirror", "`raw_qmp_copy.py --blockdev-mirror` (the same durable recipe, QEMU's default "
                "buf-size and granularity, copy-mode background)", "raw", raw_mirror_args()),
            Arm("livecopy-mirror-wb", "`livecopy submit`, policy `strategy: mirror`, `copy_mode: write-blocking`",
                "livecopy", settings={"strategy": "mirror", "copy_mode": "write-blocking"}),
            Arm("livecopy-stream", "`livecopy submit`, policy `strategy: stream`", "livecopy",
                settings={"strategy": "stream"}),
            Arm("raw-stream", "`raw_qmp_copy.py --flush` (snapshot + block-stream, destination flushed before "
                "job-finalize)", "raw", ["--flush"]),
            Arm("convert", "`qemu-img convert -O qcow2 -t none` (offline; O_DIRECT, flushed at close)", "convert",
                convert=convert_none),
            Arm("convert+sync", "`qemu-img convert -O qcow2` (offline; its default cache mode, unsafe), then "
                "`sync FILE` (fsync): durable through the page cache, as the mirror's writeback target is",
                "convert", convert=convert_then_sync),
        ]

    def describe(self):
        return (f"{self.title}: {size_text(self.size)}, livecopy mirror (background, write-blocking) vs raw "
                "durable mirror, livecopy stream, raw durable stream, durable qemu-img convert (two ways)")

    def _run(self, ctx, directory):
        rounds = self.pairs(ctx)
        load_start = loadavg()
        by_key = {arm.key: arm for arm in self.arms}
        keys = [arm.key for arm in self.arms]
        warmups = warm_up(ctx, self.name, [k for k in ("raw-mirror", "livecopy-mirror") if k in by_key],
                          lambda key: self.one_copy(ctx, directory, by_key[key], 0, False)["seconds"])
        results = {key: [] for key in keys}
        rows, checks = [], []
        for index in range(rounds):
            order = rotated(keys, index)
            row = {"round": index + 1, "order": order}
            for key in order:
                result = self.one_copy(ctx, directory, by_key[key], index + 1, True)  # every copy verified
                results[key].append(result)
                row[key] = result["seconds"]
                checks.append(f"round {index + 1} {key}: {result['check']}")
                log(f"[{self.name}] round {index + 1}/{rounds} {key}: {result['seconds']:.3f} s")
            rows.append(row)
            if "livecopy-mirror" in row and "raw-mirror" in row:
                log(f"[{self.name}] round {index + 1}: livecopy-mirror / raw-mirror "
                    f"{row['livecopy-mirror'] / row['raw-mirror']:.3f}")
        return self._section(ctx, rows, results, checks, warmups, load_start, loadavg())

    # (measure, time of X, time of Y, target, check): the value is the median over the
    # rounds of time X / time Y (a wall ratio, or, with X and Y swapped, a throughput ratio).
    targets = (
        ("livecopy mirror wall / raw mirror client wall", "livecopy-mirror", "raw-mirror", "≤ 1.03",
         lambda v: v <= 1.03),
        ("livecopy mirror throughput / durable `qemu-img convert -t none`'s", "convert", "livecopy-mirror", "≥ 0.9",
         lambda v: v >= 0.9),
        ("livecopy mirror throughput / livecopy stream's", "livecopy-stream", "livecopy-mirror", "≥ 1.8",
         lambda v: v >= 1.8),
        ("livecopy mirror throughput / `qemu-img convert` + `sync FILE`'s", "convert+sync", "livecopy-mirror", "≥ 0.9",
         lambda v: v >= 0.9),
        ("livecopy mirror write-blocking wall / background wall (no guest writes)", "livecopy-mirror-wb",
         "livecopy-mirror", "—", None),
        ("raw mirror client throughput / raw stream client's (both durable)", "raw-stream", "raw-mirror", "—", None),
    )

    def _section(self, ctx, rows, results, checks, warmups, load_start, load_end):
        keys = [arm.key for arm in self.arms]
        med = {key: statistics.median(row[key] for row in rows) for key in keys}
        size = size_text(self.size)
        measured = []
        for measure, x, y, target, check in self.targets:
            if x not in keys or y not in keys:
                continue
            ratios = [row[x] / row[y] for row in rows]
            value = statistics.median(ratios)
            met = check(value) if check else None
            measured.append((measure, value, min(ratios), max(ratios), target, met))
            ctx.note("mirror", f"{self.name}: {measure} ({size}, {len(rows)} rounds)",
                     f"{value:.3f} (spread {min(ratios):.3f}–{max(ratios):.3f})", target, met)
        reference = "livecopy-mirror" if "livecopy-mirror" in keys else keys[0]
        command = f"scripts/bench {self.name}"
        if ctx.pairs_override:
            command = f"BENCH_PAIRS={ctx.pairs_override} {command}"
        lines = [
            f"## {self.name}", "",
            f"{self.title}: one VM, one qcow2 disk with {size} allocated (pattern {self.pattern}), copied uncapped "
            "to a new qcow2 image on the same file system (the work dir's), durable in every arm: "
            + describe_arms_line(self.arms) + ". "
            f"{len(rows)} rounds after {ctx.warmups} discarded warm-up(s) of "
            f"{' and '.join(sorted({key for key, _ in warmups})) or 'nothing'}; the order of "
            "the arms rotates every round and every other round is reversed (ABBA across rounds). Each run: "
            "fresh source copy (`cp`, `sync`, untimed), fresh VM; timed: the copy's process, spawn to exit. "
            f"Every destination is checked offline after its run. Load average at start / end: {load_start} / "
            f"{load_end} (2 cores, shared with other builds).", "",
            f"Command: `{command}`", "",
            "| round | " + " | ".join(f"{key} (s)" for key in keys) + " |",
            "|---:|" + "---:|" * len(keys),
        ]
        for row in rows:
            lines.append(f"| {row['round']} | " + " | ".join(f"{row[key]:.3f}" for key in keys) + " |")
        lines += [
            "", f"| arm | median (s) | min / max (s) | MiB/s | {reference}'s throughput as a fraction of it |",
            "|---|---:|---:|---:|---:|",
        ]
        for key in keys:
            values = [row[key] for row in rows]
            lines.append(f"| {key} | {med[key]:.3f} | {min(values):.3f} / {max(values):.3f} | "
                         f"{self.size / MIB / med[key]:.0f} | {med[key] / med[reference]:.2f} |")
        lines += ["", "| measure (median of the per-round ratios) | value | min / max | target | verdict |",
                  "|---|---:|---:|---:|---|"]
        for measure, value, low, high, target, met in measured:
            verdict = "—" if met is None else ("met" if met else "**missed**")
            lines.append(f"| {measure} | {value:.3f} | {low:.3f} / {high:.3f} | {target} | {verdict} |")
        phases = [res["phases"] for res in results.get("raw-mirror", [])]
        if phases:
            def med_ms(a, b):
                return statistics.median((p[b] - p[a]) * 1000 for p in phases)
            lines += ["", "Raw mirror client, medians (ms): connect → target attached "
                      f"{med_ms('connected', 'snapshot'):.0f} (of which creating the destination "
                      f"{med_ms('connected', 'created'):.0f}), mirror started → READY {med_ms('stream_started', 'ready'):.0f}, "
                      f"flush (HMP `qemu-io NODE \"reopen\"`) {med_ms('ready', 'flushed'):.0f}, "
                      f"block-job-complete → pending {med_ms('flushed', 'pending'):.0f}, "
                      f"job-finalize → dismissed {med_ms('pending', 'dismissed'):.0f}."]
        held = [res["held_ms"] for key in ("livecopy-mirror", "livecopy-mirror-wb")
                for res in results.get(key, []) if res.get("held_ms") is not None]
        if held:
            lines += ["", f"livecopy's own note at each pivot, \"guest I/O held for N ms\" (block-job-complete → "
                      f"job-finalize done): median {statistics.median(held):.0f} ms, max {max(held)} ms over "
                      f"{len(held)} mirror runs."]
        timelines = [res["timeline"] for res in results.get("livecopy-mirror", []) if res.get("timeline")]
        if timelines:
            lines += ["", "livecopy mirror's own timeline (its event rows; medians over the rounds):", ""]
            lines += timeline_table(median_timeline(timelines))
        if warmups:
            lines += ["", "Warm-up runs, not counted: " + ", ".join(f"{k} {s:.3f} s" for k, s in warmups) + "."]
        lines += ["", "Checked offline, QEMU stopped (`qemu-io -r read -P` over the whole image; `qemu-img info`: "
                  "no backing file); after every live run drive0 ran on the destination alone with no job left "
                  "(query-block, query-jobs on the bench's monitor):"] + [f"- {check}" for check in checks]
        return "\n".join(lines) + "\n"


scenario(MirrorUncapped())


# --------------------------------------------------------------------------- 7c. convergence


class GuestWriter:
    """During one run: an NBD export of drive0 (on the bench's own monitor) and
    scripts/nbd_writer.py writing into it at a steady rate; the bench's monitor stays
    connected to collect the job's events with QEMU's timestamps."""

    def __init__(self, scenario_, vm, run_dir, seed):
        self.scenario, self.vm, self.run_dir, self.seed = scenario_, vm, run_dir, seed
        self.socket = os.path.join(run_dir, "nbd.sock")
        self.output = os.path.join(run_dir, "writer.json")
        self.process = None
        self.monitor = None
        self.data = None

    def start(self):
        monitor = raw_qmp_copy.QMP(self.vm.admin)
        monitor.greeting()
        monitor.execute("qmp_capabilities")
        self.monitor = monitor
        node = next(b for b in monitor.execute("query-block") if b["device"] == "drive0")["inserted"]["node-name"]
        monitor.execute("nbd-server-start", addr={"type": "unix", "data": {"path": self.socket}})
        monitor.execute("block-export-add", type="nbd", id="bench-writer", **{"node-name": node},
                        name="drive0", writable=True)
        with open(os.path.join(self.run_dir, "writer.err"), "w") as errors:
            self.process = subprocess.Popen(
                [os.path.realpath(sys.executable), WRITER, self.socket, "drive0", self.output,
                 "--rate", str(self.scenario.rate), "--block", str(self.scenario.block), "--seed", str(self.seed),
                 "--avoid", self.scenario.pattern],
                stdout=subprocess.DEVNULL, stderr=errors, stdin=subprocess.DEVNULL)
        time.sleep(self.scenario.lead_in)  # the writer's steady state before the copy starts

    def finish(self, result):
        time.sleep(self.scenario.tail)  # writes after the pivot
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        with open(self.output) as f:
            self.data = json.load(f)
        if code != 0 or not self.data.get("ok"):
            raise BenchError(f"writer failed (exit {code}): {self.data.get('error')}, errors {self.data.get('errors')}; "
                             f"{open(os.path.join(self.run_dir, 'writer.err')).read()[-500:]}")
        events = []
        self.monitor.sock.settimeout(0.3)
        try:
            while True:
                events.append(self.monitor.events.pop(0) if self.monitor.events else self.monitor._read())
        except OSError:  # socket.timeout: nothing more queued
            pass
        self.monitor.sock.close()
        self.monitor = None

        def at(predicate):
            for event in events:
                if predicate(event):
                    stamp = event.get("timestamp", {})
                    return stamp.get("seconds", 0) + stamp.get("microseconds", 0) / 1e6
            return None

        def status(name):
            return lambda e: e.get("event") == "JOB_STATUS_CHANGE" and e["data"].get("status") == name
        spawn = result["spawn_wall"]
        end = spawn + result["seconds"]
        ready = at(lambda e: e.get("event") == "BLOCK_JOB_READY")
        pending = at(status("pending"))
        started = at(status("created"))
        result["writer"] = self.data
        result["events"] = {"created": started, "ready": ready, "pending": pending,
                            "completed": at(lambda e: e.get("event") == "BLOCK_JOB_COMPLETED")}
        writes = self.data["writes"]
        block = self.data["block"]

        def window(lo, hi):
            inside = [w for w in writes if lo <= w[0] < hi]
            latencies = [w[1] * 1000 for w in inside]
            if not latencies or hi <= lo:
                return None
            slowest = max(inside, key=lambda w: w[1])
            return {"n": len(latencies), "p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99),
                    "max": max(latencies), "rate": len(inside) * block / MIB / (hi - lo), "seconds": hi - lo,
                    # when the slowest write was sent, in ms from READY (or from the copy's spawn)
                    "max_at": (slowest[0] - (ready or spawn)) * 1000}
        result["windows"] = {
            "before": window(self.data["started"], spawn),
            "copy": window(spawn, ready if ready else end),
            "ready→exit": window(ready, end) if ready else None,
            "whole": window(spawn, end),
        }

    def close(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.monitor is not None:
            self.monitor.sock.close()
            self.monitor = None

    def verify(self, destination, fmt):
        """Offline: every block the writer wrote holds its last write's byte; the rest the
        image's pattern. qemu-io reads the commands from stdin."""
        block = self.data["block"]
        last = {}
        for _, _, offset, value in self.data["writes"]:
            last[offset] = value
        commands, cursor = [], 0
        for offset in sorted(last):
            if offset > cursor:
                commands.append(f"read -P {self.scenario.pattern} {cursor} {offset - cursor}")
            commands.append(f"read -P {last[offset]:#x} {offset} {block}")
            cursor = offset + block
        size = self.scenario.size
        if cursor < size:
            commands.append(f"read -P {self.scenario.pattern} {cursor} {size - cursor}")
        done = subprocess.run(["qemu-io", "-r", "-f", fmt, destination], input="\n".join(commands) + "\n",
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        reads = sum(1 for line in done.stdout.splitlines() if "bytes at offset" in line)
        if done.returncode != 0 or "Pattern verification failed" in done.stdout or reads != len(commands):
            failed = [line for line in done.stdout.splitlines() if "failed" in line][:3]
            raise BenchError(f"{destination}: the guest writer's data is not all there ({reads}/{len(commands)} "
                             f"reads, {failed})")
        return (f"all {len(self.data['writes'])} writes' last contents ({len(last)} blocks of {block // KIB} KiB) "
                f"and pattern {self.scenario.pattern} elsewhere intact")



class MirrorConvergence(SingleDisk):
    """Time to READY and the writer's latency while a mirror copies a disk that a
    guest-like writer keeps writing (random 64 KiB writes at 20 MiB/s through NBD)."""

    name = "mirror-convergence"
    title = "Mirror convergence under guest writes"
    default_pairs = 3
    pattern = "0x6c"
    rate = 20 * MIB
    block = 64 * KIB
    lead_in = 1.0   # seconds of writing before the copy starts
    tail = 0.5      # seconds of writing after the copy's process exits
    idle_seconds = 4.0  # the no-copy arm's window

    def __init__(self):
        self.all_arms = [
            Arm("no-copy", f"no copy ({self.idle_seconds:.0f} s of writing only)", "none"),
            Arm("livecopy-mirror", "`livecopy submit`, `strategy: mirror`, `copy_mode: background`", "livecopy",
                settings={"strategy": "mirror", "copy_mode": "background"}),
            Arm("livecopy-mirror-wb", "`livecopy submit`, `strategy: mirror`, `copy_mode: write-blocking`",
                "livecopy", settings={"strategy": "mirror", "copy_mode": "write-blocking"}),
            Arm("raw-mirror", "`raw_qmp_copy.py --blockdev-mirror` (copy-mode background)", "raw",
                raw_mirror_args()),
            Arm("raw-mirror-wb", "`raw_qmp_copy.py --blockdev-mirror --copy-mode write-blocking`", "raw",
                raw_mirror_args(copy_mode="write-blocking")),
        ]

    def describe(self):
        return (f"{self.title}: {size_text(self.size)}, random {self.block // KIB} KiB writes at "
                f"{self.rate // MIB} MiB/s through NBD; no copy vs livecopy/raw mirror background and write-blocking")

    def _run(self, ctx, directory):
        rounds = self.pairs(ctx)
        load_start = loadavg()
        keys = [arm.key for arm in self.arms]
        by_key = {arm.key: arm for arm in self.arms}
        results = {key: [] for key in keys}
        checks = []
        seed = [0]

        def during(vm, run_dir):
            seed[0] += 1
            return GuestWriter(self, vm, run_dir, seed[0])
        for index in range(rounds):
            for key in rotated(keys, index):
                result = self.one_copy(ctx, directory, by_key[key], index + 1, True, during=during)
                results[key].append(result)
                if "check" in result:
                    checks.append(f"round {index + 1} {key}: {result['check']}")
                w = result["windows"]["copy"]
                ready = result["events"]["ready"]
                log(f"[{self.name}] round {index + 1}/{rounds} {key}: {result['seconds']:.3f} s"
                    + (f", READY after {ready - result['spawn_wall']:.3f} s" if ready else "")
                    + (f"; writer p50 {w['p50']:.2f} ms p99 {w['p99']:.2f} ms, {w['rate']:.1f} MiB/s" if w else ""))
        return self._section(ctx, rounds, results, checks, load_start, loadavg())

    def _section(self, ctx, rounds, results, checks, load_start, load_end):
        def med(values, fmt="{:.1f}"):
            values = [v for v in values if v is not None]
            return fmt.format(statistics.median(values)) if values else "—"

        def win(rs, name, key):
            return [r["windows"][name][key] if r["windows"].get(name) else None for r in rs]
        command = f"scripts/bench {self.name}" + (f" (BENCH_PAIRS={ctx.pairs_override})" if ctx.pairs_override else "")
        lines = [
            f"## {self.name}", "",
            f"{self.title}: one VM, one qcow2 disk with {size_text(self.size)} allocated (pattern {self.pattern}); "
            f"the bench exports drive0 over NBD on its own monitor (`nbd-server-start` on a unix socket, "
            "`block-export-add {type: nbd, node-name: <drive0's node>, writable: true}`) and runs "
            f"`scripts/nbd_writer.py`: random {self.block // KIB} KiB writes at {self.rate // MIB} MiB/s, one in "
            "flight, on a fixed schedule that catches up after a stall; the writer times each write. The writer "
            f"starts {self.lead_in:.1f} s before the copy and stops {self.tail:.1f} s after the copy's process "
            "exits, so it writes through the READY phase and the pivot (the export's block backend follows the "
            "node to the target). Arms: " + describe_arms_line(self.arms) + f". {rounds} rounds, order rotated "
            "every round and reversed every other round. READY is the BLOCK_JOB_READY event's QEMU timestamp "
            "(seen on the bench's monitor), measured from the copy process's spawn. Windows: *copy* = spawn → "
            "READY (for no-copy: its whole window), *ready→exit* = READY → the copy's exit (flush, complete, "
            f"pivot). Load average at start / end: {load_start} / {load_end} (2 cores, shared with other builds).",
            "", f"Command: `{command}`", "",
            "| arm | total (s) | time to READY (s) | writes during copy | p50 (ms) | p99 (ms) | max (ms) | "
            "MiB/s achieved | ready→exit p99 / max (ms) | ready→exit MiB/s | guest I/O held at the pivot (ms, "
            "livecopy's note) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for arm in self.arms:
            rs = results[arm.key]
            totals = [r["seconds"] for r in rs] if arm.kind != "none" else [None]
            ready = [(r["events"]["ready"] - r["spawn_wall"]) if r["events"]["ready"] else None for r in rs]
            lines.append(
                f"| {arm.key} | {med(totals, '{:.3f}')} | {med(ready, '{:.3f}')} | {med(win(rs, 'copy', 'n'), '{:.0f}')} | "
                f"{med(win(rs, 'copy', 'p50'), '{:.2f}')} | {med(win(rs, 'copy', 'p99'), '{:.2f}')} | "
                f"{med(win(rs, 'copy', 'max'), '{:.1f}')} | {med(win(rs, 'copy', 'rate'))} | "
                f"{med(win(rs, 'ready→exit', 'p99'), '{:.1f}')} / {med(win(rs, 'ready→exit', 'max'), '{:.1f}')} | "
                f"{med(win(rs, 'ready→exit', 'rate'))} | {med([r.get('held_ms') for r in rs], '{:.0f}')} |")
            if arm.kind == "livecopy":
                ready_s = [x for x in ready if x is not None]
                ctx.note("mirror", f"{self.name}: {arm.key}, time to READY / total; writer p50 / p99 during the copy "
                         f"({self.rate // MIB} MiB/s of {self.block // KIB} KiB writes)",
                         f"{med(ready_s, '{:.2f}')} s / {med(totals, '{:.2f}')} s; "
                         f"{med(win(rs, 'copy', 'p50'), '{:.2f}')} / {med(win(rs, 'copy', 'p99'), '{:.2f}')} ms")
        lines += ["", "Medians over the rounds. Per-round rows:", "",
                  "| round | arm | total (s) | READY (s) | copy p50 / p99 / max (ms) | slowest write sent at (ms from "
                  "READY; no-copy: from the window's start) | copy MiB/s | ready→exit max (ms) |",
                  "|---:|---|---:|---:|---:|---:|---:|---:|"]
        for index in range(rounds):
            for arm in self.arms:
                r = results[arm.key][index]
                w, p = r["windows"]["copy"], r["windows"].get("ready→exit")
                ready = r["events"]["ready"]
                lines.append(f"| {index + 1} | {arm.key} | {r['seconds']:.3f} | "
                             + (f"{ready - r['spawn_wall']:.3f}" if ready else "—") + " | "
                             + (f"{w['p50']:.2f} / {w['p99']:.2f} / {w['max']:.1f} | {w['max_at']:+.0f} | {w['rate']:.1f}"
                                if w else "— | — | —")
                             + " | " + (f"{p['max']:.1f}" if p else "—") + " |")
        lines += ["", "Checked offline, QEMU stopped: every write the writer had acknowledged is in the destination "
                  "(its last content per block, `qemu-io -r read -P`), the pattern everywhere else:"]
        lines += [f"- {check}" for check in checks]
        return "\n".join(lines) + "\n"


scenario(MirrorConvergence())


# --------------------------------------------------------------------------- 7d. many disks



class ManyDisksMirror(ManyDisks):
    """many-disks with livecopy's `strategy: mirror` and the raw client's durable mirror
    recipe: 50 VMs × 2 disks, 4 at a time."""

    title = "Many disks, mirror"
    pattern = "0x72"
    policy_settings = {"strategy": "mirror"}
    raw_args = ["--blockdev-mirror", "--flush-at-pending", "--match-source-cache"]
    # livecopy's events around QEMU's copy: the job started → READY. At READY a disk of a
    # VM with several mirror disks notes that it waits to pivot with the others (since
    # 30acf3c); a lone disk writes the pivot's intent at once.
    copy_labels = ("outcome blockdev-mirror", "note: pivoting together with", "intent pivot")

    def describe(self):
        return (f"{self.title}: {self.vm_count} VMs × {self.disks_per_vm} disks × {size_text(self.size)}, "
                f"livecopy strategy mirror vs raw durable mirror client at max_parallel_disks {self.parallel}")

    def _section(self, ctx, results, verified, images):
        s = describe_pairs(results)
        disks = self.vm_count * self.disks_per_vm
        per_disk = [(p["livecopy"] - p["raw"]) * 1000 / disks for p in results]
        overhead = statistics.median(per_disk)
        lc = [p["livecopy_extra"] for p in results]
        raw = [p["raw_extra"] for p in results]
        rss = max(x["rss_mib"] for x in lc)
        stream = getattr(ctx, "per_disk_overhead_ms", {}).get("many-disks")
        tag = f"max_parallel_disks {self.parallel}"
        ctx.note("mirror", f"{self.name}: {disks} disks ({tag}): total wall livecopy mirror / raw mirror; disks/s",
                 f"{s['a_median']:.2f} s / {s['b_median']:.2f} s; {disks / s['a_median']:.1f} disks/s")
        ctx.note("mirror", f"{self.name}: overhead per disk, whole wall (A − B) / {disks} ({tag})"
                 + ("; many-disks (stream) in the same run" if stream is not None else ""),
                 f"{overhead:+.1f} ms" + (f"; stream {stream:+.1f} ms" if stream is not None else ""),
                 "≤ 20 ms", overhead <= 20)
        command = f"scripts/bench {self.name}" + (f" (BENCH_PAIRS={ctx.pairs_override})" if ctx.pairs_override else "")

        def m(rows, key):
            return statistics.median(x[key] for x in rows)
        lines = [
            f"## {self.name}", "",
            f"As many-disks, with the mirror strategy: one plan of {self.vm_count} VMs × {self.disks_per_vm} disks = "
            f"{disks} disks, each a qcow2 overlay over one shared base with {size_text(self.size)} allocated "
            f"(pattern {self.pattern}), on tmpfs ({images}); the database on the work dir's file system. "
            f"A = `livecopy submit` (`strategy: mirror`, `speed: 0`, `max_parallel_disks: {self.parallel}`, "
            f"`retire_source: keep`, `verify: none`), B = `raw_qmp_copy.py --many --parallel {self.parallel} --blockdev-mirror` "
            "(per disk: query-block, `qemu-img create` of the destination, blockdev-add, blockdev-mirror, READY, "
            "flush by HMP `qemu-io NODE \"reopen\"`, block-job-complete, job-finalize, job-dismiss; one QMP "
            f"connection per VM). {len(results)} pairs in ABBA order after one discarded raw warm-up.", "",
            f"Command: `{command}` (name `many-disks` before it in the same invocation to get the streaming "
            "figure of the same run next to it: `scripts/bench many-disks many-disks-mirror`)", "",
        ] + pair_rows(results, "livecopy", "raw") + [
            "", "| summary | value |", "|---|---:|",
            f"| median total wall, livecopy mirror (s) | {s['a_median']:.3f} ({disks / s['a_median']:.1f} disks/s) |",
            f"| median total wall, raw mirror client (s) | {s['b_median']:.3f} ({disks / s['b_median']:.1f} disks/s) |",
            f"| median ratio livecopy / raw | {s['ratio_median']:.3f} (min {s['ratio_min']:.3f}, max {s['ratio_max']:.3f}) |",
            f"| **overhead per disk, median of per-pair (A − B) / {disks} (ms)** | **{overhead:+.1f}** "
            f"(min {min(per_disk):+.1f}, max {max(per_disk):+.1f}); target ≤ 20 |",
            "| the same for streaming (many-disks, this run) | "
            + (f"{stream:+.1f}" if stream is not None else "not run in this invocation") + " |",
            f"| QEMU's copy per disk (mean; livecopy: `{self.copy_labels[0]}` → `{'` or `'.join(self.copy_labels[1:])}`; raw: "
            f"mirror started → READY), median over runs (ms) | livecopy {m(lc, 'copy_mean_ms'):.1f}, raw "
            f"{m(raw, 'copy_mean_ms'):.1f} |",
            f"| time outside the copy per disk (mean), median over runs (ms) | livecopy {m(lc, 'outside_copy_ms'):.1f}, "
            f"raw {m(raw, 'outside_copy_ms'):.1f} |",
            f"| livecopy CPU user + sys (s), median | {statistics.median(x['cpu'] for x in lc):.2f} |",
            f"| raw client CPU user + sys (s), median | {statistics.median(x['cpu'] for x in raw):.2f} |",
            f"| livecopy peak RSS (MiB), max over runs | {rss:.1f} |",
            f"| events written per plan | {lc[0]['events']} |",
            "",
            "Per disk, livecopy's steps (time from the disk's previous persisted event; median and mean over the "
            "disks, then the median over the runs):", "",
            "| step (event of the disk) | median Δ (ms) | mean Δ (ms) |", "|---|---:|---:|",
        ] + [f"| {label} | {statistics.median(x['steps'].get(label, 0) for x in lc):.1f} | "
             f"{statistics.median(x['step_means'].get(label, 0) for x in lc):.1f} |" for label in lc[0]["step_order"]] + [
            "", "Checked: every livecopy plan ended with all disks `completed`; the raw client saw every job "
            "complete with offset = len; after every run each drive ran on its destination alone with no job "
            "left. Offline:",
        ] + [f"- {v}" for v in verified]
        return "\n".join(lines) + "\n"


scenario(ManyDisksMirror("many-disks-mirror", 4))
