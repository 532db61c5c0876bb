"""Fleet mode: one PostgreSQL fleet store, N `livecopy agent`s ("hosts") with 4 small VMs
each, one plan over all of them, per-host limits so that disks queue; against one
`livecopy serve` on SQLite driving the same number of disks with the same concurrency."""

import os
import re
import shutil
import signal
import statistics
import subprocess
import time

from ..common import BenchError, MIB, log, size_text
from ..pgcluster import Cluster, proc_cpu, wait_for
from ..process import read_output
from ..registry import scenario
from ..stats import pct
from ..timeline import db_rows
from .shared import Fleet, create_database, in_scratch, make_fleet_template, write_policy

ROUND_TRIPS = re.compile(r"fleet store round trips: (\d+)")
FINAL = ("completed", "failed", "rolled_back", "needs_attention", "refused")


def write_host_plan(path, name, policy, hosts):
    """hosts: [(host or None, Fleet)]; one VM per Fleet VM, named after its host."""
    lines = [f"name: {name}", f"policy: {policy}", "vms:"]
    for host, fleet in hosts:
        for number, vm_name_disks in enumerate(fleet.plan_vms()):
            vm_name, qmp, disks = vm_name_disks
            lines += [f"  - name: {host or 'local'}-{vm_name}", f"    qmp: {qmp}"]
            if host:
                lines.append(f"    host: {host}")
            lines.append("    disks:")
            for device, destination in disks:
                lines += [f"      - device: {device}", f"        destination: {destination}"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


class Agent:
    def __init__(self, ctx, cluster, host, config, log_path):
        self.host = host
        self.log_path = log_path
        self.started = time.monotonic()
        self.lifetime = None
        with open(log_path, "w") as out:
            self.process = subprocess.Popen([ctx.livecopy, "agent", "--host", host, "--config", config],
                                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=cluster.env())

    def cpu(self):
        return proc_cpu(self.process.pid)

    def stop(self):
        """SIGTERM; returns the round trips the agent reports."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise BenchError(f"agent {self.host} did not stop on SIGTERM: {read_output(self.log_path)[-1000:]}")
        self.lifetime = time.monotonic() - self.started
        match = ROUND_TRIPS.search(read_output(self.log_path))
        if not match:
            raise BenchError(f"agent {self.host} exited {self.process.returncode} without its round trips: "
                             f"{read_output(self.log_path)[-1500:]}")
        return int(match.group(1))


class FleetScenario:
    name = "fleet"
    needs_benchkit = False
    title = "Fleet mode"
    sizes = (2, 4, 8)
    vms_per_host = 4
    max_disks = 2
    size = 16 * MIB
    pattern = "0x6c"
    idle_spans = (2.0, 12.0)

    def describe(self):
        return (f"{self.title}: PostgreSQL + {'/'.join(map(str, self.sizes))} agents × {self.vms_per_host} VMs × "
                f"{size_text(self.size)}, host limit {self.max_disks}; vs one serve on SQLite")

    def pairs(self, ctx):
        return ctx.pairs_override or 3

    def run(self, ctx):
        fast = ctx.fast_dir(self.name, 4 * max(self.sizes) * self.vms_per_host * self.size + 256 * MIB)
        return in_scratch(ctx, self.name, lambda directory: self._run(ctx, directory, fast), also_remove=(fast,))

    def _run(self, ctx, directory, fast):
        sizes = tuple(int(s) for s in os.environ.get("BENCH_FLEET_SIZES", "").split(",") if s) or self.sizes
        template = make_fleet_template(fast, self.size, self.pattern)
        policy = os.path.join(directory, "policy.yaml")
        write_policy(policy, speed=0, retire_source="keep", verify="none", max_parallel_disks=self.vms_per_host)
        config = os.path.join(directory, "agent.yaml")
        with open(config, "w") as f:
            f.write("poll_interval: 200ms\n")
        cluster = Cluster(os.path.join(directory, "pg"))
        cluster.start()
        try:
            log(f"[{self.name}] PostgreSQL on 127.0.0.1:{cluster.port}")
            run_env = cluster.env()
            out = subprocess.run([ctx.livecopy, "limits"], env=run_env, capture_output=True, text=True)
            if out.returncode != 0:
                raise BenchError(f"livecopy limits exited {out.returncode}: {out.stderr[-1000:]}")
            idle = self._idle(ctx, cluster, directory, config)
            log(f"[{self.name}] idle agent: {idle['rate']:.2f} round trips/s, start-up {idle['startup']:.1f}, "
                f"{idle['cpu_rate'] * 100:.2f}% of a core")
            results = []
            for round_number in range(1, self.pairs(ctx) + 1):
                for hosts in sizes:
                    fleet = self._fleet_run(ctx, cluster, directory, fast, template, policy, config, hosts,
                                            round_number, idle)
                    serve = self._serve_run(ctx, directory, fast, template, hosts, round_number)
                    results.append((round_number, hosts, fleet, serve))
            return self._section(ctx, sizes, idle, results)
        finally:
            cluster.stop()

    # ------------------------------------------------------------------ idle agents

    def _idle(self, ctx, cluster, directory, config):
        totals = []
        for span in self.idle_spans:
            agent = Agent(ctx, cluster, f"idle-{int(span)}", config, os.path.join(directory, f"idle{int(span)}.log"))
            wait_for(lambda: cluster.sql(f"SELECT 1 FROM host_leases WHERE host = '{agent.host}'"), 30,
                     f"agent {agent.host}'s lease")
            started = time.monotonic()
            cpu_start = agent.cpu()
            time.sleep(span)
            cpu = agent.cpu() - cpu_start
            seconds = time.monotonic() - started
            totals.append((seconds, agent.stop(), cpu))
        (s1, n1, _), (s2, n2, c2) = totals
        rate = (n2 - n1) / (s2 - s1)
        return {"rate": rate, "startup": n1 - rate * s1, "cpu_rate": c2 / s2, "runs": totals}

    # ------------------------------------------------------------------ fleet

    def _fleet_run(self, ctx, cluster, directory, fast, template, policy, config, hosts, round_number, idle):
        tag = f"r{round_number}n{hosts}"
        names = [f"{tag}-host-{n}" for n in range(hosts)]
        fleets = []
        for host in names:
            host_dir = os.path.join(fast, tag, host)
            os.makedirs(host_dir)
            fleets.append(Fleet(host_dir, self.vms_per_host, 1, template))
        run_dir = os.path.join(directory, tag)
        os.makedirs(run_dir)
        env = cluster.env()
        for host in names:
            subprocess.run([ctx.livecopy, "limits", "set", "--host", host, "--max-disks", str(self.max_disks)],
                           env=env, check=True, stdout=subprocess.DEVNULL)
        agents = []
        try:
            for fleet in fleets:
                fleet.start()
            agents = [Agent(ctx, cluster, host, config, os.path.join(run_dir, f"{host}.log")) for host in names]
            like = f"{tag}-host-%"
            wait_for(lambda: int(cluster.sql(f"SELECT count(*) FROM host_leases WHERE host LIKE '{like}'")[0][0])
                     == hosts, 60, "every agent's lease")
            time.sleep(1.0)  # past the agents' start-up round trips
            plan = os.path.join(run_dir, "plan.yaml")
            write_host_plan(plan, f"bench-fleet-{tag}", policy, list(zip(names, fleets)))
            pg_cpu0 = cluster.cpu_seconds()
            agent_cpu0 = [a.cpu() for a in agents]
            qemu_cpu0 = sum(proc_cpu(vm.process.pid) for f in fleets for vm in f.vms)
            wall0 = time.time()
            started = time.monotonic()
            submit = subprocess.run([ctx.livecopy, "submit", "--detach", plan], env=env, capture_output=True, text=True)
            if submit.returncode != 0:
                raise BenchError(f"submit --detach exited {submit.returncode}: {submit.stderr[-1500:]}")
            ids = [int(line) for line in submit.stdout.split() if line.strip().isdigit()]
            if len(ids) != hosts:
                raise BenchError(f"submit --detach printed {submit.stdout!r}, expected {hosts} plan ids")
            id_list = ",".join(map(str, ids))

            def done():
                states = [row[0] for row in cluster.sql(f"SELECT state FROM plans WHERE id IN ({id_list})")]
                if any(s in FINAL and s != "completed" for s in states):
                    raise BenchError(f"fleet plans {ids}: {states}")
                return all(s == "completed" for s in states)

            wait_for(done, 600, f"plans {ids} to complete", interval=0.1)
            seconds = time.monotonic() - started
            pg_cpu = cluster.cpu_seconds() - pg_cpu0
            agent_cpu = sum(a.cpu() - c for a, c in zip(agents, agent_cpu0))
            qemu_cpu = sum(proc_cpu(vm.process.pid) for f in fleets for vm in f.vms) - qemu_cpu0
            round_trips = [a.stop() for a in agents]
            for fleet in fleets:
                fleet.check_copied()
        finally:
            for agent in agents:
                if agent.process.poll() is None:
                    agent.process.kill()
                    agent.process.wait()
            for fleet in fleets:
                fleet.stop()
            shutil.rmtree(os.path.join(fast, tag), ignore_errors=True)
        slots = {int(d): float(at) for d, at in cluster.sql(
            f"SELECT disk_id, min(at) FROM events WHERE plan_id IN ({id_list}) AND disk_id IS NOT NULL AND detail LIKE 'copy slot taken:%' "
            "GROUP BY disk_id")}
        streaming = {int(d): float(at) for d, at in cluster.sql(
            f"SELECT disk_id, min(at) FROM events WHERE plan_id IN ({id_list}) AND disk_id IS NOT NULL AND kind = 'transition' "
            "AND to_state = 'streaming' GROUP BY disk_id")}
        finished = {int(d): float(at) for d, at in cluster.sql(
            f"SELECT disk_id, max(at) FROM events WHERE plan_id IN ({id_list}) AND disk_id IS NOT NULL AND kind = 'transition' "
            "AND to_state = 'completed' GROUP BY disk_id")}
        disks = hosts * self.vms_per_host
        if len(slots) != disks or len(streaming) != disks:
            raise BenchError(f"{len(slots)} slot events and {len(streaming)} streaming transitions for {disks} disks")
        waits = [(streaming[d] - slots[d]) * 1000 for d in slots]
        held, handoffs = self._max_concurrent(cluster, id_list)
        total_trips = sum(round_trips)
        # What the same agents would have sent idle over their lifetimes (start-up included).
        idle_trips = sum(idle["startup"] + idle["rate"] * a.lifetime for a in agents)
        result = {
            "disks": disks, "seconds": seconds, "first_slot": min(slots.values()) - wall0,
            "slot_span": max(slots.values()) - min(slots.values()),
            "last_done": max(finished.values()) - wall0 if finished else seconds,
            "wait_p50": pct(waits, 0.5), "wait_p99": pct(waits, 0.99), "wait_max": max(waits),
            "round_trips": total_trips, "idle_trips": idle_trips, "lifetimes": [a.lifetime for a in agents],
            "trips_per_disk": total_trips / disks, "work_trips_per_disk": (total_trips - idle_trips) / disks,
            "pg_cpu": pg_cpu, "agent_cpu": agent_cpu, "qemu_cpu": qemu_cpu, "max_per_host": held,
            "handoff_p50": pct(handoffs, 0.5) if handoffs else 0.0, "handoff_max": max(handoffs, default=0.0),
            "waited": len(handoffs),
        }
        log(f"[{self.name}] {hosts} agents, {disks} disks: {seconds:.2f} s, {disks / seconds:.1f} disks/s, "
            f"slot→streaming p50 {result['wait_p50']:.0f} ms p99 {result['wait_p99']:.0f} ms, "
            f"{result['trips_per_disk']:.1f} round trips/disk ({result['work_trips_per_disk']:.1f} over idle), "
            f"PostgreSQL {pg_cpu:.2f} s CPU, agents {agent_cpu:.2f} s, QEMU {qemu_cpu:.2f} s; slot hand-off p50 "
            f"{result['handoff_p50']:.0f} ms max {result['handoff_max']:.0f} ms over {len(handoffs)} queued disks")
        return result

    def _max_concurrent(self, cluster, id_list):
        """The most slots any host held at once, replayed from the slot events in id order (the
        order they were inserted under the host's lock; their `at` is read before the lock);
        and for each disk that waited for a slot, the hand-off: from the release of a slot on
        its host to its own take (the agent asks again when the store notifies it of the release)."""
        waited = {int(row[0]) for row in cluster.sql(
            f"SELECT DISTINCT disk_id FROM events WHERE plan_id IN ({id_list}) "
            "AND detail LIKE 'waiting for a copy slot%'")}
        rows = cluster.sql(
            f"SELECT at, disk_id, detail FROM events WHERE plan_id IN ({id_list}) AND (detail LIKE 'copy slot taken:%' "
            "OR detail LIKE 'copy slot released:%') ORDER BY id")
        held, most, released, handoffs = {}, 0, {}, []
        for at, disk_id, detail in rows:
            match = re.search(r"host=(\S+)", detail)
            host = match.group(1) if match else "?"
            if detail.startswith("copy slot taken"):
                held[host] = held.get(host, 0) + 1
                if int(disk_id) in waited and released.get(host):
                    handoffs.append((float(at) - released[host].pop(0)) * 1000)
            else:
                held[host] = held.get(host, 0) - 1
                released.setdefault(host, []).append(float(at))
            most = max(most, held[host])
        return most, handoffs

    # ------------------------------------------------------------------ serve on SQLite

    def _serve_run(self, ctx, directory, fast, template, hosts, round_number):
        tag = f"r{round_number}n{hosts}-serve"
        run_dir = os.path.join(directory, tag)
        os.makedirs(run_dir)
        disks = hosts * self.vms_per_host
        db = os.path.join(run_dir, "livecopy.db")
        create_database(ctx, db)
        parallel = hosts * self.max_disks
        policy = os.path.join(run_dir, "policy.yaml")
        write_policy(policy, speed=0, retire_source="keep", verify="none", max_parallel_disks=parallel)
        settings = os.path.join(run_dir, "serve.yaml")
        with open(settings, "w") as f:
            f.write("poll_interval: 200ms\n")
        vm_dir = os.path.join(fast, tag)
        os.makedirs(vm_dir)
        fleet = Fleet(vm_dir, disks, 1, template)
        serve = None
        try:
            fleet.start()
            serve_log = os.path.join(run_dir, "serve.log")
            with open(serve_log, "w") as out:
                serve = subprocess.Popen([ctx.livecopy, "serve", "--config", settings, "--db", db], stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            time.sleep(1.0)
            plan = os.path.join(run_dir, "plan.yaml")
            write_host_plan(plan, f"bench-fleet-{tag}", policy, [(None, fleet)])
            cpu0 = proc_cpu(serve.pid)
            qemu0 = sum(proc_cpu(vm.process.pid) for vm in fleet.vms)
            wall0 = time.time()
            started = time.monotonic()
            submit = subprocess.run([ctx.livecopy, "submit", "--detach", plan, "--db", db], capture_output=True,
                                    text=True)
            if submit.returncode != 0:
                raise BenchError(f"serve's submit --detach exited {submit.returncode}: {submit.stderr[-1500:]}")
            plan_id = int(submit.stdout.strip().split()[-1])

            def done():
                state = db_rows(db, "SELECT state FROM plans WHERE id = ?", (plan_id,))[0][0]
                if state in FINAL and state != "completed":
                    raise BenchError(f"serve's plan {plan_id}: {state}")
                return state == "completed"

            wait_for(done, 600, f"serve's plan {plan_id}", interval=0.1)
            seconds = time.monotonic() - started
            cpu = proc_cpu(serve.pid) - cpu0
            qemu = sum(proc_cpu(vm.process.pid) for vm in fleet.vms) - qemu0
            streaming = [at for (at,) in db_rows(db, "SELECT min(at) FROM events WHERE plan_id = ? AND kind = "
                                                 "'transition' AND to_state = 'streaming' GROUP BY disk_id",
                                                 (plan_id,))]
            fleet.check_copied()
        finally:
            if serve is not None:
                serve.terminate()
                serve.wait(timeout=60)
            fleet.stop()
            shutil.rmtree(vm_dir, ignore_errors=True)
        result = {"disks": disks, "seconds": seconds, "cpu": cpu, "qemu_cpu": qemu, "parallel": parallel,
                  "first_stream": min(streaming) - wall0, "stream_span": max(streaming) - min(streaming)}
        log(f"[{self.name}] serve on SQLite, {disks} disks, max_parallel_disks {parallel}: {seconds:.2f} s, "
            f"{disks / seconds:.1f} disks/s, serve {cpu:.2f} s CPU")
        return result

    # ------------------------------------------------------------------ report

    def _section(self, ctx, sizes, idle, results):
        command = f"scripts/bench {self.name}" + (f" (BENCH_PAIRS={ctx.pairs_override})" if ctx.pairs_override else "")
        lines = [
            f"## {self.name} (fleet mode: agents over one PostgreSQL store)", "",
            f"One throwaway PostgreSQL 15 cluster (`scripts/postgres start`, its data in the work dir, fsync on) "
            f"as the fleet store. Per fleet size N: N `livecopy agent --host H --config agent.yaml` processes "
            f"(`poll_interval: 200ms`), each \"host\" with {self.vms_per_host} VMs (`-machine none`) of one qcow2 "
            f"disk, a fresh overlay over a fully written {size_text(self.size)} base on tmpfs ({ctx.fast}); "
            f"`livecopy limits set --host H --max-disks {self.max_disks}` for every host, so that each host's "
            f"{self.vms_per_host} disks queue for {self.max_disks} slots; one plan over all hosts "
            f"(`submit --detach`, split into N plans), policy `speed: 0`, `retire_source: keep`, `verify: none`, "
            f"`max_parallel_disks: {self.vms_per_host}`. Timed from the submit until every plan is `completed` "
            "(the bench polls `plans` every 100 ms through one long-lived psql session). The agents are started "
            "(and their leases held) before the clock starts and stopped with SIGTERM after it.", "",
            f"Baseline in the same run: the same number of disks (N × {self.vms_per_host} VMs) driven by one "
            f"`livecopy serve` (`poll_interval: 200ms`) on a SQLite file in the work dir, one plan submitted "
            f"with `--detach`, policy `max_parallel_disks: 2N` (the fleet's total slots).", "",
            f"Command: `{command}`", "",
            "Measures: *disks/s* = disks / wall; *slot hand-off* = for each disk that waited for a slot, from a `copy slot released` on its host to its own `copy slot taken` (the agent asks again when the store notifies it of the release: NOTIFY in the release's transaction, LISTEN in each agent); *slot → streaming* = per disk, from its `copy slot taken` "
            "event's `at` (it fits the limits) to its transition to `streaming` (snapshot taken, job started); "
            "*round trips/disk* = the statements the agents sent (each prints `fleet store round trips: N` on "
            "SIGTERM) / disks, and the same after subtracting what idle agents send over the same lifetimes "
            f"(measured first: one idle agent sends {idle['startup']:.0f} at start-up, then "
            f"{idle['rate']:.2f}/s, and uses {idle['cpu_rate'] * 100:.2f}% of a core); *CPU* = utime+stime "
            "from /proc over the timed window: all the cluster's processes (the postmaster with its reaped "
            "backends, and every live child), all agents, all QEMUs.", "",
            "| agents | round | disks | wall (s) | disks/s | first slot after submit (s) | slot → streaming p50 / p99 / max (ms) "
            "| most slots one host held | queued disks: slot hand-off p50 / max (ms) | round trips/disk (over idle) | PostgreSQL CPU (s; % of a core) "
            "| agents' CPU (s; % of a core) | QEMU CPU (s) | serve on SQLite: wall (s), disks/s, CPU (s) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        results = sorted(results, key=lambda r: (r[1], r[0]))
        for round_number, hosts, f, b in results:
            lines.append(
                f"| {hosts} | {round_number} | {f['disks']} | {f['seconds']:.2f} | {f['disks'] / f['seconds']:.1f} | "
                f"{f['first_slot']:.2f} | {f['wait_p50']:.0f} / {f['wait_p99']:.0f} / {f['wait_max']:.0f} | "
                f"{f['max_per_host']} of {self.max_disks} | {f['waited']}: {f['handoff_p50']:.0f} / {f['handoff_max']:.0f} | {f['trips_per_disk']:.1f} ({f['work_trips_per_disk']:.1f}) | "
                f"{f['pg_cpu']:.2f}; {f['pg_cpu'] / f['seconds'] * 100:.0f}% | "
                f"{f['agent_cpu']:.2f}; {f['agent_cpu'] / f['seconds'] * 100:.0f}% | {f['qemu_cpu']:.2f} | "
                f"{b['seconds']:.2f}, {b['disks'] / b['seconds']:.1f}, {b['cpu']:.2f} |")
        for hosts in sizes:
            rows = [f for _, n, f, _ in results if n == hosts]
            med = lambda key: statistics.median(r[key] for r in rows)  # noqa: E731
            ctx.note("fleet", f"{hosts} agents × {self.vms_per_host} disks (host limit {self.max_disks}), median of "
                     f"{len(rows)}: disks/s; slot → streaming p50 / p99; round trips/disk (over idle); PostgreSQL CPU",
                     f"{statistics.median(r['disks'] / r['seconds'] for r in rows):.1f}; {med('wait_p50'):.0f} / "
                     f"{med('wait_p99'):.0f} ms; {med('trips_per_disk'):.1f} ({med('work_trips_per_disk'):.1f}); "
                     f"{statistics.median(r['pg_cpu'] / r['seconds'] for r in rows) * 100:.0f}% of a core")
        self.results = results
        self.idle = idle
        return "\n".join(lines) + "\n"


scenario(FleetScenario())
