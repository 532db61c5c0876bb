"""7. The mirror strategy: tuning of blockdev-mirror (opt-in), livecopy's mirror against the
raw durable mirror client, stream and qemu-img convert, convergence under guest-like
writes, and the per-disk cost over many disks."""

import json
import os
import shutil
import statistics
import time

from ..common import BenchError, GIB, MIB, RAW_CLIENT, log, run, size_text
from ..images import copy_pristine, fill_pattern_image, verify_pattern_image
from ..process import read_output, timed
from ..registry import scenario
from ..report import loadavg
from ..stats import pct
from ..timeline import livecopy_timeline
from ..vm import VM
from .shared import create_database, in_scratch, warm_up, write_plan, write_policy

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

    def __init__(self, key, label, kind, args=(), settings=None, fmt="qcow2", convert=None):
        self.key, self.label, self.kind = key, label, kind
        self.args = list(args)
        self.settings = settings or {}
        self.fmt = fmt
        self.convert = convert

    @property
    def live(self):
        return self.kind in ("raw", "livecopy")


def raw_mirror_args(buf_size=None, granularity=None, copy_mode="background", fmt="qcow2"):
    args = ["--blockdev-mirror", "--copy-mode", copy_mode, "--format", fmt]
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
                    write_policy(path, speed=0, retire_source="keep", **arm.settings)
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
        vm = None
        result = {"arm": arm.key}
        try:
            out = os.path.join(run_dir, "out")
            helper = None
            if arm.kind == "convert":
                argv = arm.convert(source, destination)
            else:
                vm = VM(run_dir, source)
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
            if vm:
                vm.stop()
            shutil.rmtree(run_dir, ignore_errors=True)
            os.sync()


def describe_arms_line(arms):
    return "; ".join(f"**{arm.key}** = {arm.label}" for arm in arms)


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
        self.arms = []
        for buf in self.buf_sizes:
            for gran in self.granularities:
                key = f"mirror-b{human(buf).replace(' ', '')}-g{human(gran).replace(' ', '')}"
                self.arms.append(Arm(key, f"raw durable mirror, buf-size {human(buf)}, granularity {human(gran)}",
                                     "raw", raw_mirror_args(buf, gran)))
                self.arms[-1].buf, self.arms[-1].gran = buf, gran
        self.arms += [
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
                f"{{{', '.join(human(g) for g in self.granularities)}}}, and durable qemu-img convert")

    def _run(self, ctx, directory):
        rounds = self.pairs(ctx)
        load_start = loadavg()
        keys = [arm.key for arm in self.arms]
        by_key = {arm.key: arm for arm in self.arms}
        for key in ("mirror-bdefault-gdefault", "convert-t-none"):  # warm-up, discarded
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
        base = med["mirror-bdefault-gdefault"]
        best_convert = min(med[a.key] for a in self.arms if a.kind == "convert")

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
        fastest = min((a for a in self.arms if a.kind == "raw"), key=lambda a: med[a.key])
        ctx.note("7", "mirror-tuning: fastest raw mirror setting / QEMU's defaults (median s)",
                 f"{fastest.key}: {med[fastest.key]:.3f} / {base:.3f}; best durable convert {best_convert:.3f}")
        lines += ["", f"Fastest mirror setting: {fastest.label}, {med[fastest.key]:.3f} s against {base:.3f} s with "
                  f"QEMU's defaults ({med[fastest.key] / base:.3f}×); fastest durable convert {best_convert:.3f} s.",
                  "", "Checked offline (first run of each arm):"]
        lines += [f"- {key}: {check}" for key, check in checks.items()]
        return "\n".join(lines) + "\n"


scenario(MirrorTuning())
