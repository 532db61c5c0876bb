"""Helpers shared by the scenarios: plan and policy files, ABBA ordering, result rows,
fleets of VMs."""

import os
import shutil
import subprocess

from ..common import BenchError, log, raw_qmp_copy, run
from ..images import fill_pattern_image, fresh_run, verify_pattern_image
from ..vm import VM


def write_policy(path, **settings):
    with open(path, "w") as f:
        f.write("# scripts/bench\n" + "".join(f"{key}: {value}\n" for key, value in settings.items()))


def write_plan(path, name, policy, vms):
    """vms: list of (vm name, qmp socket, [(device, destination[, format])])."""
    lines = [f"name: {name}", f"policy: {policy}", "vms:"]
    for vm_name, qmp, disks in vms:
        lines += [f"  - name: {vm_name}", f"    qmp: {qmp}", "    disks:"]
        for device, destination, *fmt in disks:
            lines += [f"      - device: {device}", f"        destination: {destination}"]
            lines += [f"        format: {f}" for f in fmt]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def create_database(ctx, db):
    """Creates and migrates the scenario's livecopy database, untimed. Read-only commands
    (history, status, show) never create one, so a plan that the preflight refuses (its
    QMP socket does not exist) is submitted: livecopy creates the database and records
    the plan as refused, with exit code 2. Later plans get higher ids (the timeline
    reads the newest)."""
    directory = os.path.dirname(db)
    plan = os.path.join(directory, "create-database.yaml")
    write_plan(plan, "bench-create-database", "default",
               [("none", os.path.join(directory, "no-such.qmp"), [("drive0", os.path.join(directory, "never.qcow2"))])])
    output = run([ctx.livecopy, "submit", plan, "--db", db], check=False)
    os.remove(plan)
    if not os.path.exists(db):
        raise BenchError(f"livecopy did not create {db}: {output.strip()[-2000:]}")


def warm_up(ctx, name, tools, run_one):
    """Runs each tool ctx.warmups times before the measured pairs, discarding the times:
    the first copies after the source is written are much slower (seen: 7 s instead of
    3 s for 2 GiB uncapped, whichever tool runs it). run_one(tool) returns seconds.
    Returns [(tool, seconds)]."""
    warmups = []
    for number in range(1, ctx.warmups + 1):
        for tool in tools:
            seconds = run_one(tool)
            warmups.append((tool, seconds))
            log(f"[{name}] warm-up {number}/{ctx.warmups} {tool}: {seconds:.3f} s (discarded)")
    return warmups


def abba(index):
    return "AB" if index % 2 == 0 else "BA"


def pair_rows(results, a_name, b_name, fmt="{:.3f}"):
    lines = [f"| pair | order | {a_name} (s) | {b_name} (s) | A / B | A − B (ms) |", "|---:|:---:|---:|---:|---:|---:|"]
    for p in results:
        lines.append(f"| {p['pair']} | {p['order']} | {fmt.format(p['livecopy'])} | {fmt.format(p['raw'])} | "
                     f"{p['livecopy'] / p['raw']:.3f} | {(p['livecopy'] - p['raw']) * 1000:+.0f} |")
    return lines


def pattern_round(run_dir, pristines, size, patterns, verify, copy):
    """One timed round over fresh copies of `pristines` (one VM each, drive0): `copy(vms,
    destinations)` copies them and returns its seconds; then each VM is checked to run on
    its destination, the VMs stop, and with `verify` every destination is read back
    offline against its pattern. Everything of the round is removed afterwards."""
    sources, destinations = fresh_run(run_dir, pristines)
    vms = [VM(run_dir, source, prefix=f"vm{n}") for n, source in enumerate(sources)]
    try:
        start_vms(vms)
        seconds = copy(vms, destinations)
        for vm, destination in zip(vms, destinations):
            vm.check_copied(destination)
        stop_vms(vms)
        if verify:
            for destination, pattern in zip(destinations, patterns):
                verify_pattern_image(destination, size, pattern)
        return seconds
    finally:
        stop_vms(vms)
        shutil.rmtree(run_dir, ignore_errors=True)
        os.sync()


def start_vms(vms):
    for vm in vms:
        vm.spawn()
    for vm in vms:
        vm.wait_ready()


def stop_vms(vms):
    for vm in vms:
        if vm.process is not None and vm.process.poll() is None:
            try:
                vm.admin_command("quit")
            except (OSError, raw_qmp_copy.QMPError):
                vm.process.kill()
    for vm in vms:
        if vm.process is not None:
            try:
                vm.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                vm.process.kill()
                vm.process.wait()


class Fleet:
    """`count` VMs with `disks` drives each, every drive a fresh qcow2 overlay (backing
    format recorded) over one shared, fully allocated base image: each drive holds
    `size` bytes of data for block-stream to copy, and a run's sources cost no copying."""

    def __init__(self, directory, count, disks, template):
        self.directory = directory
        self.vms = []
        self.destinations = []
        for number in range(count):
            sources, destinations = [], []
            for disk in range(disks):
                source = os.path.join(directory, f"v{number:02d}d{disk}.qcow2")
                shutil.copyfile(template, source)
                sources.append(source)
                destinations.append(os.path.join(directory, f"v{number:02d}d{disk}.new.qcow2"))
            self.vms.append(VM(directory, sources, prefix=f"v{number:02d}"))
            self.destinations.append(destinations)

    def plan_vms(self):
        return [(f"vm{number:02d}", vm.qmp, [(f"drive{d}", dst) for d, dst in enumerate(dests)])
                for number, (vm, dests) in enumerate(zip(self.vms, self.destinations))]

    def raw_plan(self):
        return [{"socket": vm.qmp, "device": f"drive{d}", "destination": dst}
                for vm, dests in zip(self.vms, self.destinations) for d, dst in enumerate(dests)]

    def start(self):
        start_vms(self.vms)

    def check_copied(self):
        for vm, destinations in zip(self.vms, self.destinations):
            vm.check_copied(destinations)

    def stop(self):
        stop_vms(self.vms)


def make_fleet_template(directory, size, pattern):
    base = os.path.join(directory, "base.qcow2")
    fill_pattern_image(base, size, pattern)
    template = os.path.join(directory, "overlay-template.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", template])
    return template


def verify_overlay_copy(path, size, pattern):
    return verify_pattern_image(path, size, pattern)


def in_scratch(ctx, name, body, also_remove=()):
    """Runs body(directory) in a fresh scratch directory named after the scenario under
    the bench's work directory, and removes it afterwards, with the directories in
    also_remove, whatever happens."""
    directory = os.path.join(ctx.work, name)
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    try:
        return body(directory)
    finally:
        for path in (directory, *also_remove):
            shutil.rmtree(path, ignore_errors=True)
