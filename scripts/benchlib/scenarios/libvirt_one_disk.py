"""The libvirt row: livecopy on a libvirt domain against virsh's own recipe
(`snapshot-create-as` + `blockpull`) on the same kind of domain.

Needs root and a libvirtd answering on qemu:///system (`scripts/libvirtd start`); without
them the scenario is skipped with a note in the report, and the run goes on."""

import datetime
import os
import re
import shutil
import statistics
import subprocess
import time
import xml.etree.ElementTree as ElementTree

from ..common import BenchError, GIB, MIB, log, run, size_text
from ..process import cpu_seconds, read_output, timed
from ..registry import scenario
from ..stats import describe_pairs
from ..timeline import livecopy_timeline, median_timeline, timeline_table
from .shared import abba, create_database, warm_up, write_policy

URI = "qemu:///system"


def virsh(*arguments, check=True, timeout=60):
    try:
        return run(["virsh", "-c", URI] + list(arguments), check=check, timeout=timeout)
    except subprocess.TimeoutExpired:
        if check:
            raise BenchError(f"virsh {' '.join(arguments)} did not return within {timeout} s") from None
        return ""


def unavailable():
    """Why the scenario cannot run here, or None."""
    if os.geteuid() != 0:
        return "not root (libvirt's qemu:///system needs root)"
    if not shutil.which("virsh"):
        return "virsh is not installed (scripts/install-deps installs libvirt-clients)"
    try:
        result = subprocess.run(["virsh", "-c", URI, "version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return f"`virsh -c {URI} version` got no answer within 20 s"
    if result.returncode != 0:
        return (f"libvirtd does not answer on {URI} (`virsh version`: "
                f"{result.stdout.strip().splitlines()[-1] if result.stdout.strip() else 'no output'}); "
                "as root, `scripts/libvirtd start` starts it")
    return None


def domain_xml(name, image):
    """The test rig's kind of domain (Tests/TestSupport/LibvirtDomain.swift) without its test
    monitor: type qemu (TCG), machine pc, 64 MiB, no graphics, no guest OS, one virtio disk."""
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{image}'/>
      <target dev='vda' bus='virtio'/>
      <alias name='ua-vda'/>
    </disk>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def disk_source(xml_text):
    """vda's (source file, backing file or None) in a domain XML."""
    disk = ElementTree.fromstring(xml_text).find("./devices/disk/target[@dev='vda']/..")
    if disk is None:
        raise BenchError(f"no disk vda in the domain XML:\n{xml_text[-2000:]}")
    source = disk.find("source")
    backing = disk.find("backingStore/source")
    return (source.get("file") if source is not None else None,
            backing.get("file") if backing is not None else None)


def parse_event_times(text):
    """Wall-clock times (seconds since the epoch) of the 'completed' block-job events in
    `virsh event --timestamp` output, e.g.
    `2026-11-29 19:52:38.123+0000: event 'block-job-2' for domain 'D': Block Pull for vda completed`."""
    times = []
    for line in text.splitlines():
        match = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)([+-]\d{4}): event 'block-job-2'.* completed", line)
        if match:
            stamp = datetime.datetime.strptime(match.group(1) + match.group(2), "%Y-%m-%d %H:%M:%S.%f%z")
            times.append(stamp.timestamp())
    return times


class LibvirtOneDisk:
    """One libvirt domain, one qcow2 disk of `size` with `data` bytes written, copied at
    `bandwidth_mib` MiB/s by livecopy (A) and by virsh's snapshot + blockpull (B)."""

    name = "libvirt-one-disk"

    def __init__(self, size, data, bandwidth_mib, pattern, default_pairs):
        self.size, self.data, self.bandwidth_mib, self.pattern = size, data, bandwidth_mib, pattern
        self.default_pairs = default_pairs

    def pairs(self, ctx):
        return ctx.pairs_override or self.default_pairs

    def describe(self):
        return (f"libvirt domain: livecopy against virsh snapshot-create-as + blockpull, "
                f"{size_text(self.size)} disk with {size_text(self.data)} of data, {self.bandwidth_mib} MiB/s, "
                f"{self.default_pairs} pairs (root and libvirtd; skipped otherwise)")

    def run(self, ctx):
        reason = unavailable()
        if reason:
            log(f"[{self.name}] skipped: {reason}")
            ctx.note("libvirt", f"{self.name}: median ratio livecopy / virsh", f"skipped: {reason}", "≤ 1.05")
            return (f"## {self.name}\n\nSkipped in this run: {reason}. It needs root and a libvirtd answering "
                    f"`virsh -c {URI} version`; run `scripts/libvirtd start` as root, then "
                    f"`scripts/bench {self.name}`.\n")
        directory = os.path.join(ctx.work, self.name)
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory)
        need = 3 * self.data + GIB
        free = shutil.disk_usage(directory).free
        if free < need:
            raise BenchError(f"{directory}: {free // MIB} MiB free, need {need // MIB} MiB")
        # QEMU runs as libvirt-qemu: it must get through every directory down to the images.
        os.chmod(directory, 0o755)
        parent = os.path.dirname(directory)
        while parent != "/":
            if not os.stat(parent).st_mode & 0o001:
                raise BenchError(f"{parent} does not let others through (o+x), so QEMU (libvirt-qemu) cannot "
                                 f"reach {directory}; set BENCH_DIR elsewhere")
            parent = os.path.dirname(parent)
        try:
            return self._run(ctx, directory)
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def _run(self, ctx, directory):
        pristine = os.path.join(directory, "pristine.qcow2")
        log(f"[{self.name}] writing the source image: {size_text(self.data)} of pattern {self.pattern} "
            f"in a {size_text(self.size)} disk")
        run(["qemu-img", "create", "-q", "-f", "qcow2", pristine, str(self.size)])
        run(["qemu-io", "-f", "qcow2", "-c", f"write -P {self.pattern} 0 {self.data}", pristine])

        db = os.path.join(directory, "livecopy.db")
        create_database(ctx, db)  # create and migrate it once, untimed
        policy = os.path.join(directory, "policy.yaml")
        write_policy(policy, speed=f"{self.bandwidth_mib}M", retire_source="keep", verify="none")
        warmups = warm_up(ctx, self.name, ("virsh", "livecopy"),
                          lambda tool: self._one_run(ctx, directory, pristine, db, policy, 0, tool, False)["seconds"])

        pairs_wanted = self.pairs(ctx)
        results, verified = [], {}
        for index in range(pairs_wanted):
            order = abba(index)
            pair = {"pair": index + 1, "order": order}
            for kind in order:
                tool = "livecopy" if kind == "A" else "virsh"
                result = self._one_run(ctx, directory, pristine, db, policy, index + 1, tool, tool not in verified)
                # describe_pairs() names the baseline "raw".
                pair["livecopy" if tool == "livecopy" else "raw"] = result["seconds"]
                pair[f"{tool}_extra"] = result
                if result.get("check"):
                    verified[tool] = f"pair {index + 1}: {result['check']}"
                log(f"[{self.name}] pair {index + 1}/{pairs_wanted} {kind} {tool}: {result['seconds']:.3f} s")
            results.append(pair)
            log(f"[{self.name}] pair {index + 1}/{pairs_wanted} ({order}): livecopy {pair['livecopy']:.3f} s, "
                f"virsh {pair['raw']:.3f} s, ratio {pair['livecopy'] / pair['raw']:.3f}")
        return self._section(ctx, results, verified, warmups)

    def _one_run(self, ctx, directory, pristine, db, policy, pair, tool, verify):
        """A fresh source copy and a fresh domain, the copy by `tool`, then the checks."""
        run_dir = os.path.join(directory, f"p{pair:02d}-{tool}")
        os.makedirs(run_dir)
        os.chmod(run_dir, 0o755)
        source = os.path.join(run_dir, "src.qcow2")
        destination = os.path.join(run_dir, "dst.qcow2")
        run(["cp", "--reflink=auto", pristine, source])
        os.sync()  # the source copy's writeback must not land inside the timed window
        domain = f"lcbench-p{pair:02d}-{tool}-{os.urandom(4).hex()}"
        xml_path = os.path.join(run_dir, "domain.xml")
        with open(xml_path, "w") as f:
            f.write(domain_xml(domain, source))
        observer = None
        observer_path = os.path.join(run_dir, "events.out")
        try:
            virsh("define", xml_path)
            virsh("start", domain)
            # An untimed observer of libvirt's block-job events, in both arms: the time
            # libvirt reported the pull complete, which `virsh blockpull --wait` learns
            # only at its next poll (every 500 ms).
            with open(observer_path, "w") as out:
                observer = subprocess.Popen(["virsh", "-c", URI, "event", "--domain", domain, "--event",
                                             "block-job-2", "--loop", "--timestamp"],
                                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            time.sleep(0.5)  # let it register its callback
            if observer.poll() is not None:
                raise BenchError(f"virsh event exited at once: {read_output(observer_path)}")
            if tool == "livecopy":
                result = self._livecopy(ctx, run_dir, db, policy, pair, domain, destination)
            else:
                result = self._virsh(run_dir, pair, domain, source, destination)
            time.sleep(0.2)  # the observer prints the last event
            observer.terminate()
            observer.wait(timeout=10)
            completed = parse_event_times(read_output(observer_path))
            if completed:
                result["event_after_spawn"] = completed[-1] - result["spawn_wall"]
            self._check_domain(domain, destination, source)
            virsh("destroy", domain)
            if verify:
                log(f"[{self.name}] verifying the {tool} destination offline (qemu-io -r)")
                result["check"] = self._verify(destination)
            return result
        finally:
            if observer is not None and observer.poll() is None:
                observer.kill()
                observer.wait()
            virsh("destroy", domain, check=False)
            virsh("undefine", domain, check=False)
            shutil.rmtree(run_dir, ignore_errors=True)
            os.sync()

    def _livecopy(self, ctx, run_dir, db, policy, pair, domain, destination):
        plan = os.path.join(run_dir, "plan.yaml")
        with open(plan, "w") as f:
            f.write(f"name: bench-{self.name}-pair{pair}\npolicy: {policy}\nvms:\n"
                    f"  - name: bench-vm\n    libvirt: {{uri: \"{URI}\", domain: {domain}}}\n    disks:\n"
                    f"      - device: vda\n        destination: {destination}\n")
        out_path = os.path.join(run_dir, "livecopy.out")
        seconds, code, usage, spawn_wall = timed([ctx.livecopy, "submit", plan, "--db", db], out_path)
        if code != 0:
            raise BenchError(f"livecopy run (pair {pair}) exited {code}:\n{read_output(out_path).strip()[-2000:]}")
        return {"seconds": seconds, "spawn_wall": spawn_wall, "cpu": cpu_seconds(usage),
                "maxrss_kib": usage.ru_maxrss,
                "timeline": livecopy_timeline(db, spawn_wall, spawn_wall + seconds)}

    def _virsh(self, run_dir, pair, domain, source, destination):
        """B: four processes, one after the other, each timed from spawn to exit; B's time
        is their sum."""
        steps = [
            # --reuse-external needs the overlay to exist (livecopy creates its own, inside its time).
            ("qemu-img create", ["qemu-img", "create", "-q", "-f", "qcow2", "-b", source, "-F", "qcow2",
                                 destination]),
            ("snapshot-create-as", ["virsh", "-c", URI, "snapshot-create-as", domain, "s", "--disk-only",
                                    "--no-metadata", "--reuse-external", "--atomic",
                                    "--diskspec", f"vda,file={destination}"]),
            ("blockpull --wait", ["virsh", "-c", URI, "blockpull", domain, "vda", "--wait",
                                  "--bandwidth", str(self.bandwidth_mib)]),
            ("sync -f", ["sync", "-f", destination]),
        ]
        result = {"seconds": 0.0, "cpu": 0.0, "steps": {}}
        for label, argv in steps:
            out_path = os.path.join(run_dir, f"virsh-{len(result['steps'])}.out")
            seconds, code, usage, spawn_wall = timed(argv, out_path)
            if code != 0:
                raise BenchError(f"virsh arm (pair {pair}): {' '.join(argv)} exited {code}:\n"
                                 f"{read_output(out_path).strip()[-2000:]}")
            result["steps"][label] = seconds
            result["seconds"] += seconds
            result["cpu"] += cpu_seconds(usage)
            if label == "qemu-img create":
                result["spawn_wall"] = spawn_wall
            if label == "blockpull --wait":
                result["pull_spawn_wall"] = spawn_wall
                result["pull_seconds"] = seconds
        return result

    def _check_domain(self, domain, destination, source):
        """After a copy: vda runs on the destination alone, the persistent definition names
        it alone, and no block job is left."""
        for label, flags in (("live", []), ("persistent (--inactive)", ["--inactive"])):
            file, backing = disk_source(virsh("dumpxml", *flags, domain))
            if file != destination or backing:
                raise BenchError(f"{domain}: the {label} definition has vda on {file} with backing {backing}, "
                                 f"expected {destination} alone")
        jobs = virsh("blockjob", domain, "vda", "--info")
        if "No current block job" not in jobs:
            raise BenchError(f"{domain}: a block job is left on vda: {jobs.strip()}")

    def _verify(self, destination):
        """Offline (domain destroyed): the data is there, the rest reads as zeros, no backing file."""
        output = run(["qemu-io", "-r", "-f", "qcow2",
                      "-c", f"read -P {self.pattern} 0 {self.data}",
                      "-c", f"read -P 0 {self.data} {self.size - self.data}", destination])
        if "Pattern verification failed" in output or output.count("read ") < 2:
            raise BenchError(f"{destination} does not hold the data:\n{output[-1000:]}")
        info = run(["qemu-img", "info", "-U", "-f", "qcow2", "--output=json", destination])
        if "backing-filename" in info:
            raise BenchError(f"{destination} still has a backing file")
        return (f"pattern {self.pattern} over the first {size_text(self.data)}, zeros after, "
                f"no backing file")

    def _section(self, ctx, results, verified, warmups):
        s = describe_pairs(results)
        n = len(results)
        # The same work as B, up to libvirt's completion event instead of virsh's next poll.
        at_event = []
        for p in results:
            b = p["virsh_extra"]
            if "event_after_spawn" in b:
                pulled = b["event_after_spawn"] - (b["pull_spawn_wall"] - b["spawn_wall"])
                at_event.append(b["seconds"] - b["pull_seconds"] + pulled)
        ratio_at_event = ([p["livecopy"] / e for p, e in zip(results, at_event)]
                          if len(at_event) == n else [])
        ctx.note("libvirt", f"{self.name}: median ratio livecopy / virsh snapshot + blockpull --wait + sync -f "
                 f"({size_text(self.size)} disk, {size_text(self.data)} data, {self.bandwidth_mib} MiB/s, {n} pairs)",
                 f"{s['ratio_median']:.3f} (spread {s['ratio_min']:.3f}–{s['ratio_max']:.3f}; "
                 + (f"{statistics.median(ratio_at_event):.3f} against virsh's arm cut at libvirt's completion event"
                    if ratio_at_event else "no event times") + ")",
                 "≤ 1.05", s["ratio_median"] <= 1.05)
        command = f"scripts/bench {self.name}"
        if ctx.pairs_override:
            command = f"BENCH_PAIRS={ctx.pairs_override} {command}"
        if ctx.warmups != 1:
            command = f"BENCH_WARMUP={ctx.warmups} {command}"
        lines = [
            f"## {self.name}", "",
            f"livecopy on a libvirt domain against virsh's own recipe. Each run defines and starts a fresh "
            f"persistent domain on `{URI}` (type `qemu`, machine `pc`, 64 MiB, no graphics, no guest OS, one "
            f"virtio disk `vda`: the test rig's domain without its test monitor) on a fresh copy of a "
            f"{size_text(self.size)} qcow2 image holding {size_text(self.data)} of data (pattern {self.pattern}), "
            f"and copies vda to a new qcow2 image at {self.bandwidth_mib} MiB/s; {n} pairs in ABBA order.", "",
            f"- A = `livecopy submit` (plan `libvirt: {{uri: \"{URI}\", domain: …}}`, policy "
            f"`speed: {self.bandwidth_mib}M`, `retire_source: keep`, `verify: none`): libvirt snapshot, a held QEMU stream, the "
            "destination flushed with QEMU's confirmation before its header is rewritten, then libvirt's pull "
            "(which has nothing left to copy) updates the domain's definitions ([docs/libvirt.md](docs/libvirt.md)).",
            f"- B = four commands, each timed from spawn to exit, summed: `qemu-img create -f qcow2 -b SRC -F qcow2 "
            f"DST` (`--reuse-external` needs the file; livecopy creates its own inside its time), `virsh "
            f"snapshot-create-as DOM s --disk-only --no-metadata --reuse-external --atomic --diskspec "
            f"vda,file=DST`, `virsh blockpull DOM vda --wait --bandwidth {self.bandwidth_mib}` (MiB/s), "
            "`sync -f DST`.",
            "- Durability, B: `sync -f` (syncfs of DST's filesystem) after the pull has completed. It writes what "
            "QEMU has handed to the kernel, not QEMU's qcow2 metadata cache, and it comes after libvirt's pull "
            "has already rewritten DST's header without its backing file. Checked here (400 MiB, `blockpull "
            "--wait`, `sync -f DST`, then `kill -9` of QEMU): DST had no backing file and "
            "`qemu-io -r -c 'read -P 0x11 0 400M'` failed at offset 0 — every copied cluster lost. A flush "
            "through QEMU before the header rewrite is impossible with `virsh blockpull` (the job finalizes by "
            "itself). So B is weaker than A, whose destination is flushed with QEMU's confirmation before the "
            "rewrite; B is the faster of the two ways to be compared with.",
            "- `virsh blockpull --wait` polls the job every 500 ms (libvirt's `virshBlockJobWait`), so it "
            "returns up to 500 ms after the pull completed. An untimed `virsh event --event block-job-2 "
            "--timestamp` runs during both arms; \"virsh at the event\" below is B with the blockpull step cut "
            "at libvirt's completion event, i.e. virsh's arm without its polling delay.",
            "- Every run: source copied from a pristine image (`cp --reflink=auto`, `sync`), domain defined and "
            "started, then the timed copy, then (untimed) `virsh dumpxml` and `dumpxml --inactive` must name DST "
            "with no backing store and `virsh blockjob --info` no job; then `virsh destroy`, `undefine`. The first "
            "run of each arm is verified offline with `qemu-io -r`.", "",
            f"Command: `{command}`", "",
            "| pair | order | livecopy (s) | virsh (s) | livecopy / virsh | livecopy − virsh (ms) | virsh at the event (s) "
            "| livecopy / virsh at the event |",
            "|---:|:---:|---:|---:|---:|---:|---:|---:|",
        ]
        for i, p in enumerate(results):
            event = (f"{at_event[i]:.3f} | {p['livecopy'] / at_event[i]:.3f}" if len(at_event) == n else "— | —")
            lines.append(f"| {p['pair']} | {p['order']} | {p['livecopy']:.3f} | {p['raw']:.3f} | "
                         f"{p['livecopy'] / p['raw']:.3f} | {(p['livecopy'] - p['raw']) * 1000:+.0f} | {event} |")
        lines += [
            "", "| summary | value |", "|---|---:|",
            f"| median livecopy (s) | {s['a_median']:.3f} |",
            f"| median virsh (s) | {s['b_median']:.3f} |",
            f"| livecopy min / max (s) | {s['a_min']:.3f} / {s['a_max']:.3f} |",
            f"| virsh min / max (s) | {s['b_min']:.3f} / {s['b_max']:.3f} |",
            f"| **median ratio livecopy / virsh** (per pair) | **{s['ratio_median']:.3f}** |",
            f"| ratio min / max | {s['ratio_min']:.3f} / {s['ratio_max']:.3f} |",
            f"| ratio of the medians | {s['ratio_of_medians']:.3f} |",
            f"| median per-pair difference (ms) | {s['diff_median_ms']:+.0f} |",
            f"| difference min / max (ms) | {s['diff_min_ms']:+.0f} / {s['diff_max_ms']:+.0f} |",
        ]
        if ratio_at_event:
            lines += [
                f"| median virsh at the event (s) | {statistics.median(at_event):.3f} |",
                f"| **median ratio livecopy / virsh at the event** (per pair) | "
                f"**{statistics.median(ratio_at_event):.3f}** |",
                f"| that ratio min / max | {min(ratio_at_event):.3f} / {max(ratio_at_event):.3f} |",
            ]
        if warmups:
            lines += ["", "Warm-up runs before the pairs, not counted: "
                      + ", ".join(f"{tool} {seconds:.3f} s" for tool, seconds in warmups) + "."]
        steps = [p["virsh_extra"]["steps"] for p in results]
        lines += ["", "virsh arm, median per step (ms): " + ", ".join(
            f"{label} {statistics.median(st[label] for st in steps) * 1000:.0f}" for label in steps[0])
            + f"; CPU of its four processes (user+sys, median) "
            f"{statistics.median(p['virsh_extra']['cpu'] for p in results) * 1000:.0f} ms."]
        timeline = median_timeline([p["livecopy_extra"]["timeline"] for p in results])
        if timeline:
            lines += [
                "", "Where livecopy's time goes (its events, medians over the pairs, ms since the process "
                "was spawned):", "",
            ] + timeline_table(timeline) + [
                "", f"livecopy process CPU (user+sys, median) "
                f"{statistics.median(p['livecopy_extra']['cpu'] for p in results) * 1000:.0f} ms, peak RSS "
                f"{max(p['livecopy_extra']['maxrss_kib'] for p in results) / 1024:.1f} MiB.",
            ]
        lines += ["", "Checked after every run: vda ran on the destination alone in the live and the persistent "
                  "definition, with no block job left. Offline, domain destroyed:"]
        for tool in ("livecopy", "virsh"):
            lines.append(f"- {tool} destination, {verified.get(tool, 'not verified')}")
        return "\n".join(lines) + "\n"


scenario(LibvirtOneDisk(1 * GIB, 512 * MIB, 256, "0x7c", 6))
