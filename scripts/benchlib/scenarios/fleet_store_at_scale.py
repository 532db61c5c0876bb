"""The fleet store at scale: livecopy's read commands on a PostgreSQL fleet store of 1 million
disks, synthesised in SQL, against a small fleet store in the same cluster; and the plans of
the statements they send (auto_explain)."""

import datetime
import os
import re
import statistics
import time

from ..common import REPO, BenchError, log, run
from ..pgcluster import Cluster
from ..process import read_output, timed
from ..registry import scenario
from ..report import startup_floor
from .shared import in_scratch

DAY = 86_400.0
SPAN_DAYS = 365
# A real policy_json (the default policy, as `submit` records it).
POLICY_JSON = ('{"qmp_retry_backoff":0.5,"copy_mode":"background","on_unverifiable":"keep_source","on_error":"enospc",'
               '"strategy":"stream","max_parallel_disks":4,"progress_interval":1,"qmp_retries":3,"command_timeout":30,'
               '"speed":0,"retire_source":"rename","quarantine_for":86400,"allow_shared_socket":false,'
               '"io_error_wait":300,"on_failure":"stop","after_restart":"resume","verify":"sample","space_margin":1.1,'
               '"verify_sample":"1%","hooks":{"commands":{},"onSwitchFailure":"rollback","timeout":60}}')

# Plans 1..N, created one after the other over SPAN_DAYS days up to `now`; the newest
# `unfinished` plans are running, pending or failed (a third each), the rest completed but
# for 1% rolled back and 0.1% refused. 4 disks each; a finished disk has the 8 events a
# fleet agent's forward copy writes (slot taken, pending→snapshotting, intent and outcome of
# the snapshot, snapshotting→streaming, streaming→retiring, retiring→completed, slot
# released; a rolled-back one rolls back instead of retiring; the copy lasts its allocated
# bytes at 200 MiB/s), a plan its 2 transitions.
SYNTH_SQL = """
SET maintenance_work_mem = '512MB';
SET synchronous_commit = off;
BEGIN;
INSERT INTO plans (id, name, policy_reference, policy_json, state, created_at, finished_at, error, host,
                   owner_pid, owner_host, owner_heartbeat)
OVERRIDING SYSTEM VALUE
SELECT g, 'evacuate-' || g, NULL, '{policy}', state, created,
       CASE WHEN state IN ('running', 'pending') THEN NULL ELSE created + 600 END,
       CASE state WHEN 'failed' THEN 'disk drive0 failed: block-stream: Input/output error'
                  WHEN 'refused' THEN 'preflight: VM vm-' || g || ' is not running' END,
       'host-' || (g % 100),
       CASE WHEN state = 'running' THEN 4000 + g % 1000 END,
       CASE WHEN state = 'running' THEN 'host-' || (g % 100) END,
       CASE WHEN state = 'running' THEN {now} - 1 END
FROM (SELECT g, {now} - ({plans} - g) * {step} AS created,
             CASE WHEN g > {plans} - {unfinished} THEN (ARRAY['running', 'pending', 'failed'])[1 + g % 3]
                  WHEN g % 1000 = 7 THEN 'refused'
                  WHEN g % 100 = 3 THEN 'rolled_back'
                  ELSE 'completed' END AS state
      FROM generate_series(1, {plans}) AS g) AS p;
SELECT setval(pg_get_serial_sequence('plans', 'id'), {plans});

INSERT INTO disks (id, plan_id, vm_name, vm_address, device, destination, source, source_format, state,
                   bytes_done, bytes_total, intent, destination_created, updated_at, strategy,
                   destination_format, allocated_bytes)
OVERRIDING SYSTEM VALUE
SELECT (p.id - 1) * 4 + k + 1, p.id, 'vm-' || ((p.id * 4 + k) % 20000),
       '/run/livecopy/vm-' || ((p.id * 4 + k) % 20000) || '.qmp', 'drive' || k,
       '/srv/array2/' || p.host || '/vm-' || ((p.id * 4 + k) % 20000) || '-' || p.id || '-' || k || '.qcow2',
       '/srv/array1/' || p.host || '/vm-' || ((p.id * 4 + k) % 20000) || '-' || k || '.qcow2', 'qcow2',
       CASE p.state WHEN 'completed' THEN 'completed' WHEN 'rolled_back' THEN 'rolled_back'
                    WHEN 'refused' THEN 'pending' WHEN 'pending' THEN 'pending'
                    WHEN 'running' THEN CASE WHEN k < 2 THEN 'streaming' ELSE 'pending' END
                    ELSE CASE WHEN k = 0 THEN 'failed' ELSE 'rolled_back' END END,
       CASE WHEN p.state = 'completed' THEN a.bytes WHEN p.state = 'running' AND k < 2 THEN a.bytes / 3 ELSE 0 END,
       a.bytes,
       CASE WHEN p.state = 'running' AND k < 2 THEN 'block-stream' END,
       p.state NOT IN ('refused', 'pending'), p.created_at + 30 * k + 400, 'stream', 'qcow2', a.bytes
FROM plans p CROSS JOIN generate_series(0, 3) AS k
     CROSS JOIN LATERAL (SELECT ((8 + (p.id * 4 + k) % 57)::bigint << 30) AS bytes) AS a;
SELECT setval(pg_get_serial_sequence('disks', 'id'), {plans} * 4);

DROP INDEX events_by_plan;
DROP INDEX events_by_disk;
INSERT INTO events (plan_id, disk_id, at, kind, from_state, to_state, detail)
SELECT d.plan_id, d.id,
       p.created_at + 30 * ((d.id - 1) % 4)
           + CASE WHEN s < 5 THEN 3 * s ELSE 12 + d.allocated_bytes / 209715200.0 + 3 * (s - 5) END,
       CASE WHEN s IN (0, 7) THEN 'note' WHEN s = 2 THEN 'intent' WHEN s = 3 THEN 'outcome' ELSE 'transition' END,
       CASE s WHEN 1 THEN 'pending' WHEN 4 THEN 'snapshotting' WHEN 5 THEN 'streaming'
              WHEN 6 THEN CASE WHEN d.state = 'rolled_back' THEN 'rolling_back' ELSE 'retiring' END END,
       CASE s WHEN 1 THEN 'snapshotting' WHEN 4 THEN 'streaming'
              WHEN 5 THEN CASE WHEN d.state = 'rolled_back' THEN 'rolling_back' ELSE 'retiring' END
              WHEN 6 THEN d.state END,
       CASE s WHEN 0 THEN 'copy slot taken: host=' || p.host || ' (1 of 2), speed cap none'
              WHEN 2 THEN 'blockdev-snapshot-sync: ' || d.source || ' -> ' || d.source || '.livecopy-' || d.id
              WHEN 3 THEN 'blockdev-snapshot-sync: done'
              WHEN 7 THEN 'copy slot released: host=' || p.host
              ELSE '' END
FROM disks d JOIN plans p ON p.id = d.plan_id CROSS JOIN generate_series(0, 7) AS s
WHERE (d.state IN ('completed', 'rolled_back') AND p.state IN ('completed', 'rolled_back', 'failed'))
   OR (d.state IN ('streaming', 'failed') AND s < 5);
INSERT INTO events (plan_id, disk_id, at, kind, from_state, to_state, detail)
SELECT p.id, NULL, p.created_at + CASE WHEN s = 0 THEN 1 ELSE 600 END, 'transition',
       CASE WHEN s = 0 THEN 'pending' ELSE 'running' END, CASE WHEN s = 0 THEN 'running' ELSE p.state END, ''
FROM plans p CROSS JOIN generate_series(0, 1) AS s
WHERE p.state NOT IN ('pending', 'refused') AND (s = 0 OR p.state <> 'running');
CREATE INDEX events_by_plan ON events (plan_id, id);
CREATE INDEX events_by_disk ON events (disk_id, id);
{plan_totals}
COMMIT;
VACUUM ANALYZE;
"""


def plan_totals_backfill():
    """The plans' totals (migration 0003) and their states' totals (0004), filled in as
    those migrations fill them for the plans recorded before them: their own statements,
    read from the migrations."""
    def statement(migration, pattern):
        text = open(os.path.join(REPO, "Migrations", "postgres", migration)).read()
        match = re.search(pattern, text, re.S | re.M)
        if not match:
            raise BenchError(f"Migrations/postgres/{migration} has no statement matching {pattern}")
        return match.group(0)
    return "\n".join([statement("0003_plan_totals.sql", r"^UPDATE plans SET disk_count.*?;"),
                      "DELETE FROM plan_state_totals;",
                      statement("0004_plan_state_totals.sql", r"^INSERT INTO plan_state_totals.*?;")])


def iso(epoch):
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class FleetStoreAtScale:
    name = "fleet-store-at-scale"
    title = "Fleet store at scale"
    needs_benchkit = False
    runs = 11
    plans = 250_000
    small_plans = 10

    def describe(self):
        return f"{self.title}: history/status/show/summary on a PostgreSQL fleet store of {self.plans * 4} disks"

    def pairs(self, ctx):
        return ctx.pairs_override or self.runs

    def run(self, ctx):
        return in_scratch(ctx, self.name, lambda directory: self._run(ctx, directory))

    def synthesise(self, cluster, database, plans, now, directory):
        unfinished = min(300, max(3, plans // 800))
        sql = SYNTH_SQL.format(plans=plans, unfinished=unfinished, now=f"{now:.3f}",
                               step=f"{SPAN_DAYS * DAY / plans:.6f}", policy=POLICY_JSON,
                               plan_totals=plan_totals_backfill())
        path = os.path.join(directory, f"synth-{database}.sql")
        with open(path, "w") as f:
            f.write(sql)
        started = time.monotonic()
        run(cluster.psql_argv(database) + ["-q", "-v", "ON_ERROR_STOP=1", "-f", path], timeout=3600)
        return time.monotonic() - started, unfinished

    def _run(self, ctx, directory):
        plans = int(os.environ.get("BENCH_FLEET_STORE_PLANS") or self.plans)
        runs = max(5, self.pairs(ctx))
        cluster = Cluster(os.path.join(directory, "pg"))
        cluster.start()
        try:
            return self._measure(ctx, directory, cluster, plans, runs)
        finally:
            cluster.stop()

    def _measure(self, ctx, directory, cluster, plans, runs):
        log(f"[{self.name}] PostgreSQL on 127.0.0.1:{cluster.port}")
        cluster.psql_once("CREATE DATABASE small")
        urls = {"big": cluster.url, "small": cluster.url.rsplit("/", 1)[0] + "/small"}
        env = cluster.env()
        for url in urls.values():  # the schema, as livecopy creates it (every migration)
            out = run([ctx.livecopy, "limits", "--db", url], env=env)
            log(f"[{self.name}] livecopy limits --db {url}: {out.strip()[:80]}")
        now = time.time()
        log(f"[{self.name}] synthesising {plans} plans × 4 disks in SQL")
        seconds, unfinished = self.synthesise(cluster, "postgres", plans, now, directory)
        self.synthesise(cluster, "small", self.small_plans, now, directory)
        counts = {t: int(cluster.sql(f"SELECT count(*) FROM {t}")[0][0]) for t in ("plans", "disks", "events")}
        size = int(cluster.sql("SELECT pg_database_size('postgres')")[0][0])
        log(f"[{self.name}] synthesised in {seconds:.0f} s: {counts}, {size >> 20} MiB")
        middle = plans // 2
        day_start = now - (plans - middle) * SPAN_DAYS * DAY / plans
        since, until = iso(day_start), iso(day_start + DAY)
        small_day = now - (self.small_plans - self.small_plans // 2) * SPAN_DAYS * DAY / self.small_plans
        commands = [
            ("history --limit 50", ["history", "--limit", "50"], None),
            ("status", ["status"], None),
            (f"show ID (plan {middle}; small store: plan {self.small_plans // 2})",
             ["show", str(middle)], ["show", str(self.small_plans // 2)]),
            ("history --since … --until … (1 day)", ["history", "--since", since, "--until", until],
             ["history", "--since", iso(small_day), "--until", iso(small_day + DAY)]),
            ("history --summary (every plan)", ["history", "--summary"], None),
            ("history --summary --since … --until … (1 day)",
             ["history", "--summary", "--since", since, "--until", until],
             ["history", "--summary", "--since", iso(small_day), "--until", iso(small_day + DAY)]),
        ]
        outputs = {}
        for label, argv, small_argv in commands:  # one untimed run each: caches warm
            for kind, args in (("big", argv), ("small", small_argv or argv)):
                out = os.path.join(directory, "out")
                seconds_, code, _, _ = timed([ctx.livecopy] + args + ["--db", urls[kind]], out, env=env)
                if code != 0:
                    raise BenchError(f"livecopy {' '.join(args)} exited {code}: {read_output(out)[-1000:]}")
                if kind == "big":
                    outputs[label] = read_output(out)
        floor = startup_floor([ctx.livecopy, "--help"], runs)
        rows = []
        for label, argv, small_argv in commands:
            times = {"big": [], "small": []}
            for index in range(runs):
                for kind in ("big", "small") if index % 2 == 0 else ("small", "big"):
                    args = argv if kind == "big" else (small_argv or argv)
                    out = os.path.join(directory, "out")
                    seconds_, code, _, _ = timed([ctx.livecopy] + args + ["--db", urls[kind]], out, env=env)
                    if code != 0:
                        raise BenchError(f"livecopy {' '.join(args)} exited {code}: {read_output(out)[-1000:]}")
                    times[kind].append(seconds_ * 1000)
            rows.append((label, times))
            log(f"[{self.name}] {label}: median {statistics.median(times['big']):.1f} ms, max "
                f"{max(times['big']):.1f} (small store {statistics.median(times['small']):.1f} ms)")
        plans_text = self._explain(ctx, cluster, commands, urls, env, directory)
        kept = os.path.join(ctx.work, f"{self.name}-plans.txt")
        with open(kept, "w") as f:
            f.write(plans_text)
        log(f"[{self.name}] every statement's plan (auto_explain, ANALYZE, BUFFERS): {kept}")
        for label, times in rows:
            median = statistics.median(times["big"])
            ctx.note("fleet store", f"`livecopy {label.split(' (')[0]}` on {counts['disks']} disks (PostgreSQL)",
                     f"{median:.1f} ms (max {max(times['big']):.1f})", "≤ 100 ms", median <= 100)
        lines = [
            f"## {self.name} (fleet store: 1 million disks)", "",
            f"A PostgreSQL 15 fleet store (`scripts/postgres start`, port of its own, data in the work dir), "
            f"schema created by `livecopy limits --db URL` (every migration), then synthesised in SQL "
            f"(`INSERT … SELECT … generate_series`, scripts/benchlib/scenarios/fleet_store_at_scale.py) and "
            f"`VACUUM ANALYZE`d: {counts['plans']} plans over {SPAN_DAYS} days on hosts host-0..host-99, 4 disks "
            f"each, {counts['disks']} disks, {counts['events']} events (a finished disk has the 8 events of a "
            f"fleet agent's forward copy: slot taken, 3 transitions to streaming/retiring/completed plus "
            f"pending→snapshotting, the snapshot's intent and outcome, slot released; each plan 2 transitions); "
            f"the newest {unfinished} plans running, pending or failed (so `status` lists them), 1% rolled back, "
            f"0.1% refused, the rest completed; {size >> 20} MiB; synthesised in {seconds:.0f} s. Baseline in the "
            f"same cluster: a store of {self.small_plans} such plans. Each command: {runs} runs per store, "
            "alternating, after one untimed run; timed from spawn to exit (process start, TCP connection, "
            "SCRAM authentication and the migration check included).", "",
            f"Command: `scripts/bench {self.name}`"
            + (f" (BENCH_FLEET_STORE_PLANS={plans})" if plans != self.plans else ""), "",
            "| command (`livecopy … --db postgres://…`) | median (ms) | min / max (ms) | small store median (ms) | target |",
            "|---|---:|---:|---:|---|",
        ]
        for label, times in rows:
            median = statistics.median(times["big"])
            lines.append(f"| `{label}` | **{median:.1f}** | {min(times['big']):.1f} / {max(times['big']):.1f} | "
                         f"{statistics.median(times['small']):.1f} | ≤ 100 ms: {'met' if median <= 100 else 'MISSED'} |")
        lines += ["", f"Process start-up floor: `livecopy --help` {floor:.1f} ms (median of {runs}).", "",
                  "What the commands printed on the big store (first lines):", "", "```"]
        for label, _, _ in commands:
            text = outputs[label].strip().splitlines()
            lines += [f"$ livecopy {label}"] + text[:3] + (["…"] + text[-1:] if len(text) > 4 else text[3:4])
        lines += ["```", "", "The statements' plans are in docs/fleet.md (\"Query plans at 1 million disks\")."]
        return "\n".join(lines) + "\n"

    def _explain(self, ctx, cluster, commands, urls, env, directory):
        """Runs each command once more with auto_explain logging every statement's plan with
        ANALYZE and BUFFERS; returns them, by command, from the server's log."""
        log_path = os.path.join(cluster.directory, "server.log")
        settings = ["session_preload_libraries = 'auto_explain'", "auto_explain.log_min_duration = 0",
                    "auto_explain.log_analyze = on", "auto_explain.log_buffers = on",
                    "auto_explain.log_timing = on", "auto_explain.log_nested_statements = on"]
        # ALTER SYSTEM knows auto_explain's settings only once the module is loaded.
        argv = cluster.psql_argv() + ["-q", "-v", "ON_ERROR_STOP=1", "-c", "LOAD 'auto_explain'"]
        for setting in settings:
            argv += ["-c", f"ALTER SYSTEM SET {setting}"]
        run(argv + ["-c", "SELECT pg_reload_conf()"])
        time.sleep(0.5)
        sections = []
        for label, argv, _ in commands:
            start = os.path.getsize(log_path)
            out = os.path.join(directory, "out")
            seconds_, code, _, _ = timed([ctx.livecopy] + argv + ["--db", urls["big"]], out, env=env)
            time.sleep(0.3)
            with open(log_path, errors="replace") as f:
                f.seek(start)
                text = f.read()
            entries = re.split(r"\n(?=\S.*LOG:  duration: )", "\n" + text)
            plans = [e.strip() for e in entries if "plan:" in e]
            sections.append(f"===== livecopy {' '.join(argv)} ({seconds_ * 1000:.0f} ms with auto_explain, "
                            f"{len(plans)} statements)\n\n" + "\n\n".join(plans))
        cluster.psql_once("ALTER SYSTEM RESET ALL")
        cluster.psql_once("SELECT pg_reload_conf()")
        return "\n\n".join(sections) + "\n"


scenario(FleetStoreAtScale())
