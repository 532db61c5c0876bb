#!/usr/bin/env python3
"""The raw-QEMU baseline for scripts/bench: the least a client must do to copy one
running disk to a new qcow2 image over QMP, with nothing but the standard library.

    raw_qmp_copy.py SOCKET DEVICE DESTINATION [--speed BYTES] [--job-id ID] [--mirror | --flush]
    raw_qmp_copy.py SOCKET DEVICE DESTINATION --blockdev-mirror [--format qcow2|raw]
                    [--copy-mode background|write-blocking] [--buf-size BYTES]
                    [--granularity BYTES] [--on-error enospc|stop|report] [--target-direct]
                    [--flush-at-pending] [--match-source-cache]
                    [--speed BYTES] [--job-id ID]
    raw_qmp_copy.py --many PLAN.json [--parallel N] [--speed BYTES] [--blockdev-mirror [options above]]

1. connect to the QMP unix socket, read the greeting, `qmp_capabilities`;
2. `blockdev-snapshot-sync {device, snapshot-file, format: qcow2, mode: absolute-paths}`;
3. `block-stream {device, job-id, speed, auto-dismiss: false}`;
4. block on the socket until the BLOCK_JOB_COMPLETED event for the job (no polling);
5. `job-dismiss`.

With --flush, the stream starts with `auto-finalize: false`; at `pending` the client
flushes the destination (HMP `qemu-io DEVICE "flush"`) and sends `job-finalize`, as
livecopy does, then waits for BLOCK_JOB_COMPLETED.

With --mirror, steps 2-4 are instead the mirror recipe: `drive-mirror {device, job-id,
target, format: qcow2, sync: full, mode: absolute-paths, speed, auto-dismiss: false}`,
wait for BLOCK_JOB_READY, `block-job-complete` (the pivot), wait for BLOCK_JOB_COMPLETED.

With --blockdev-mirror, the durable mirror recipe livecopy's `strategy: mirror` runs:
`query-block` (the source's virtual size); the client creates DESTINATION itself
(`qemu-img create -f qcow2 DESTINATION SIZE`, no backing file; or, with --format raw, a
file opened O_EXCL and ftruncated to the virtual size); `blockdev-add {driver: qcow2|raw,
node-name, file: {driver: file, filename}}`; `blockdev-mirror {device, target, sync: full,
job-id, speed, copy-mode, auto-finalize: false, auto-dismiss: false, on-source-error,
on-target-error[, buf-size][, granularity]}`; wait for BLOCK_JOB_READY; flush the target
with evidence (HMP `qemu-io NODE "reopen"`: QEMU flushes a node before reopening it and
reports a failure in the reply, so an empty reply confirms the flush);
`block-job-complete` (the job goes pending); `job-finalize` (the device pivots to the
target); wait for BLOCK_JOB_COMPLETED; `job-dismiss`. --buf-size and --granularity are
sent only when given (QEMU's defaults: 16 MiB, and the target's cluster size or 64 KiB).
--target-direct opens the target with `cache: {direct: true}` (O_DIRECT; the VM runs on
it after the pivot): a tuning probe, not what livecopy does. --flush-at-pending
flushes the target once more, the same way, while the job is pending (guest I/O held),
before job-finalize: a guest flush during READY reaches only the source and the pivot
flushes only the source, so what was mirrored after the first flush is otherwise not
durable in the target at the pivot. For when livecopy adds that flush.
--match-source-cache opens the target with the source's cache settings (`query-block`'s
inserted.cache: direct, no-flush): without it a VM started with cache=none runs on a
writeback node after the pivot.

With --many, PLAN.json is a list of {"socket", "device", "destination"} objects: the
same stream recipe (or, with --blockdev-mirror, the mirror recipe above) for every disk,
at most N disks at a time in list order (as livecopy's max_parallel_disks schedules a
plan's disks), over one connection per socket shared by that VM's disks (QEMU serves one
client per monitor), with asyncio. In mirror mode each disk's copy is timed from the
mirror's start to READY.

Exit 0 only if every command succeeded and the event carried no error. One JSON line
on stdout reports the outcome and the time of each phase (seconds since start).
"""
import asyncio
import json
import os
import socket
import subprocess
import sys
import time

T0 = time.perf_counter()
T0_WALL = time.time()


class QMPError(Exception):
    pass


class QMP:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b""
        self.events = []  # events that arrived while waiting for a command's reply

    def _read(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise QMPError("QMP connection closed by QEMU")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def greeting(self):
        message = self._read()
        while "event" in message:  # QEMU 7.2 was seen to send RESUME before the greeting
            message = self._read()
        if "QMP" not in message:
            raise QMPError(f"unexpected greeting: {message}")

    def execute(self, command, **arguments):
        request = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        while True:
            message = self._read()
            if "event" in message:
                self.events.append(message)
            elif "error" in message:
                raise QMPError(f"{command}: {message['error'].get('desc', message['error'])}")
            elif "return" in message:
                return message["return"]

    def wait_event(self, name, key, value):
        """Blocks until event `name` whose data[key] == value arrives; returns it."""
        while True:
            message = self.events.pop(0) if self.events else self._read()
            if message.get("event") == name and message.get("data", {}).get(key) == value:
                return message


class MirrorOptions:
    """What --blockdev-mirror sends; buf_size and granularity only when set."""

    def __init__(self):
        self.fmt = "qcow2"
        self.copy_mode = "background"
        self.buf_size = None
        self.granularity = None
        self.on_error = "enospc"  # livecopy's default policy's on_error
        self.direct = False  # the target node opened with cache.direct (O_DIRECT); a tuning probe only
        # A second confirmed flush of the target while the job is pending (guest I/O held),
        # before job-finalize: a guest flush while the job is READY reaches only the source
        # and the pivot flushes only the source (seen with strace on QEMU 7.2), so writes
        # mirrored after the first flush are not yet durable in the target at the pivot.
        self.flush_at_pending = False
        # The target opened with the source's cache settings (query-block's inserted.cache:
        # direct, no-flush), so that the VM keeps its cache mode after the pivot.
        self.match_cache = False

    def describe(self):
        return {"format": self.fmt, "copy_mode": self.copy_mode, "buf_size": self.buf_size,
                "granularity": self.granularity, "on_error": self.on_error, "direct": self.direct,
                "flush_at_pending": self.flush_at_pending, "match_cache": self.match_cache}


def source_info(block, device):
    """The source's virtual size and its cache settings ({direct, no-flush})."""
    inserted = next((b for b in block if b.get("device") == device), {}).get("inserted")
    if not inserted:
        raise QMPError(f"no medium inserted in {device}: {block}")
    cache = inserted.get("cache", {})
    return int(inserted["image"]["virtual-size"]), {"direct": cache.get("direct", False),
                                                     "no-flush": cache.get("no-flush", False)}


def target_cache(options, source_cache):
    """The cache options for the target's blockdev-add, or None for blockdev-add's default."""
    if options.match_cache:
        return source_cache
    if options.direct:
        return {"direct": True}
    return None


def create_destination_argv(destination, fmt, size):
    """None for raw (created here, O_EXCL + ftruncate); the qemu-img argv for qcow2."""
    if fmt == "raw":
        fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
        return None
    if os.path.lexists(destination):
        raise QMPError(f"{destination} exists")
    return ["qemu-img", "create", "-q", "-f", "qcow2", destination, str(size)]


def target_node_arguments(node, destination, fmt, cache=None):
    arguments = {"driver": fmt, "node-name": node, "file": {"driver": "file", "filename": destination}}
    if cache:
        arguments["cache"] = dict(cache)
        arguments["file"]["cache"] = dict(cache)
    return arguments


def mirror_arguments(device, node, job_id, speed, options):
    arguments = {"device": device, "target": node, "sync": "full", "job-id": job_id, "speed": speed,
                 "copy-mode": options.copy_mode, "auto-finalize": False, "auto-dismiss": False,
                 "on-source-error": options.on_error, "on-target-error": options.on_error}
    if options.buf_size is not None:
        arguments["buf-size"] = options.buf_size
    if options.granularity is not None:
        arguments["granularity"] = options.granularity
    return arguments


def flush_command(node):
    return {"command-line": f'qemu-io {node} "reopen"'}


def job_event(job_id, wanted):
    """Predicate for the event that ends a wait for job state `wanted` (ready or pending):
    that state, or the job failing on the way (BLOCK_JOB_COMPLETED, aborting, concluded)."""
    def predicate(message):
        event, data = message.get("event"), message.get("data", {})
        if event == "JOB_STATUS_CHANGE" and data.get("id") == job_id:
            return data.get("status") in (wanted, "aborting", "concluded")
        if event in ("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED", "BLOCK_JOB_ERROR") and data.get("device") == job_id:
            return True
        return False
    return predicate


def check_job_event(message, job_id, wanted):
    data = message.get("data", {})
    if message.get("event") == "JOB_STATUS_CHANGE" and data.get("status") == wanted:
        return
    raise QMPError(f"job {job_id} did not reach {wanted}: {message}")


def sync_wait(qmp, predicate):
    while True:
        message = qmp.events.pop(0) if qmp.events else qmp._read()
        if predicate(message):
            return message


def mirror_one(qmp, device, destination, job_id, speed, options, phases, outcome):
    """The durable blockdev-mirror recipe on a synchronous connection."""
    size, source_cache = source_info(qmp.execute("query-block"), device)
    argv = create_destination_argv(destination, options.fmt, size)
    if argv:
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
    phases["created"] = time.perf_counter() - T0
    node = f"{job_id}-target"
    qmp.execute("blockdev-add", **target_node_arguments(node, destination, options.fmt,
                                                        target_cache(options, source_cache)))
    phases["snapshot"] = time.perf_counter() - T0  # the target attached (the stream recipe's snapshot)
    qmp.execute("blockdev-mirror", **mirror_arguments(device, node, job_id, speed, options))
    phases["stream_started"] = time.perf_counter() - T0
    check_job_event(sync_wait(qmp, job_event(job_id, "ready")), job_id, "ready")
    phases["ready"] = time.perf_counter() - T0
    reply = qmp.execute("human-monitor-command", **flush_command(node))
    if reply.strip():
        raise QMPError(f"flush of {node} not confirmed: {reply.strip()}")
    phases["flushed"] = time.perf_counter() - T0
    qmp.execute("block-job-complete", device=job_id)
    check_job_event(sync_wait(qmp, job_event(job_id, "pending")), job_id, "pending")
    phases["pending"] = time.perf_counter() - T0
    if options.flush_at_pending:
        reply = qmp.execute("human-monitor-command", **flush_command(node))
        if reply.strip():
            raise QMPError(f"flush of {node} at pending not confirmed: {reply.strip()}")
        phases["flushed_at_pending"] = time.perf_counter() - T0
    qmp.execute("job-finalize", id=job_id)
    outcome["size"] = size


class AsyncQMP:
    """One QMP connection shared by several disks: replies matched by id, events
    handed to whoever registered a waiter for them (registered before the command that
    causes them, so none is missed)."""

    def __init__(self):
        self.reader = self.writer = None
        self.next_id = 0
        self.replies = {}
        self.waiters = []  # (predicate, future)
        self.task = None

    async def connect(self, path):
        self.reader, self.writer = await asyncio.open_unix_connection(path, limit=1 << 24)
        greeting = json.loads(await self.reader.readline())
        while "event" in greeting:  # QEMU 7.2 was seen to send RESUME before the greeting
            greeting = json.loads(await self.reader.readline())
        if "QMP" not in greeting:
            raise QMPError(f"unexpected greeting: {greeting}")
        self.task = asyncio.get_running_loop().create_task(self._read_loop())
        await self.execute("qmp_capabilities")

    async def _read_loop(self):
        try:
            while True:
                line = await self.reader.readline()
                if not line:
                    raise QMPError("QMP connection closed by QEMU")
                message = json.loads(line)
                if "event" in message:
                    for waiter in list(self.waiters):
                        predicate, future = waiter
                        if not future.done() and predicate(message):
                            future.set_result(message)
                            self.waiters.remove(waiter)
                    continue
                future = self.replies.pop(message.get("id"), None)
                if future is None or future.done():
                    continue
                if "error" in message:
                    future.set_exception(QMPError(message["error"].get("desc", str(message["error"]))))
                else:
                    future.set_result(message.get("return"))
        except (OSError, QMPError, ValueError) as error:
            for future in list(self.replies.values()) + [f for _, f in self.waiters]:
                if not future.done():
                    future.set_exception(QMPError(str(error)))

    async def execute(self, command, **arguments):
        self.next_id += 1
        request = {"execute": command, "id": self.next_id}
        if arguments:
            request["arguments"] = arguments
        future = asyncio.get_running_loop().create_future()
        self.replies[self.next_id] = future
        self.writer.write(json.dumps(request).encode() + b"\n")
        await self.writer.drain()
        try:
            return await future
        except QMPError as error:
            raise QMPError(f"{command}: {error}") from None

    def waiter(self, predicate):
        future = asyncio.get_running_loop().create_future()
        self.waiters.append((predicate, future))
        return future

    def close(self):
        if self.task:
            self.task.cancel()
        if self.writer:
            self.writer.close()


async def mirror_async(qmp, index, disk, job_id, speed, options, started):
    """The durable blockdev-mirror recipe on a shared asynchronous connection. Its
    timings use the stream recipe's names: "stream_started" is the mirror started and
    "completed" is BLOCK_JOB_READY (the copy is done; what follows is the flush and the pivot)."""
    size, source_cache = source_info(await qmp.execute("query-block"), disk["device"])
    argv = create_destination_argv(disk["destination"], options.fmt, size)
    if argv:
        process = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL)
        if await process.wait() != 0:
            raise QMPError(f"{' '.join(argv)} exited {process.returncode}")
    node = f"{job_id}-target"
    await qmp.execute("blockdev-add", **target_node_arguments(node, disk["destination"], options.fmt,
                                                                      target_cache(options, source_cache)))
    ready = qmp.waiter(job_event(job_id, "ready"))
    await qmp.execute("blockdev-mirror", **mirror_arguments(disk["device"], node, job_id, speed, options))
    mirror_started = time.perf_counter() - T0
    check_job_event(await ready, job_id, "ready")
    ready_at = time.perf_counter() - T0
    reply = await qmp.execute("human-monitor-command", **flush_command(node))
    if reply.strip():
        raise QMPError(f"flush of {node} not confirmed: {reply.strip()}")
    pending = qmp.waiter(job_event(job_id, "pending"))
    await qmp.execute("block-job-complete", device=job_id)
    check_job_event(await pending, job_id, "pending")
    if options.flush_at_pending:
        reply = await qmp.execute("human-monitor-command", **flush_command(node))
        if reply.strip():
            raise QMPError(f"flush of {node} at pending not confirmed: {reply.strip()}")
    done = qmp.waiter(lambda m: m.get("event") == "BLOCK_JOB_COMPLETED" and m.get("data", {}).get("device") == job_id)
    await qmp.execute("job-finalize", id=job_id)
    data = (await done).get("data", {})
    if "error" in data or data.get("offset") != data.get("len"):
        raise QMPError(f"job {job_id} ended at {data.get('offset')} of {data.get('len')}: {data.get('error')}")
    await qmp.execute("job-dismiss", id=job_id)
    return {"disk": index, "started": started, "stream_started": mirror_started, "completed": ready_at,
            "done": time.perf_counter() - T0, "bytes": data.get("len")}


async def copy_many(disks, parallel, speed, mirror=None):
    """The stream recipe (or, given MirrorOptions, the durable mirror recipe) for every
    disk, `parallel` at a time, one connection per socket."""
    connections, connecting = {}, {}
    slots = asyncio.Semaphore(parallel)
    timings = []

    async def connection(path):
        if path not in connecting:
            connecting[path] = asyncio.get_running_loop().create_future()
            qmp = AsyncQMP()
            try:
                await qmp.connect(path)
                connections[path] = qmp
                connecting[path].set_result(qmp)
            except Exception as error:  # noqa: BLE001  (handed to every disk of that VM)
                connecting[path].set_exception(error)
        return await connecting[path]

    async def copy(index, disk):
        async with slots:
            started = time.perf_counter() - T0
            qmp = await connection(disk["socket"])
            job_id = f"raw-copy-{index}"
            if mirror is not None:
                timings.append(await mirror_async(qmp, index, disk, job_id, speed, mirror, started))
                return
            await qmp.execute("blockdev-snapshot-sync", **{
                "device": disk["device"], "snapshot-file": disk["destination"], "format": "qcow2",
                "mode": "absolute-paths"})
            done = qmp.waiter(lambda m: m.get("event") == "BLOCK_JOB_COMPLETED"
                              and m.get("data", {}).get("device") == job_id)
            await qmp.execute("block-stream", **{"device": disk["device"], "job-id": job_id, "speed": speed,
                                                 "auto-dismiss": False})
            stream_started = time.perf_counter() - T0
            data = (await done).get("data", {})
            completed = time.perf_counter() - T0
            if "error" in data or data.get("offset") != data.get("len"):
                raise QMPError(f"job {job_id} ended at {data.get('offset')} of {data.get('len')}: {data.get('error')}")
            await qmp.execute("job-dismiss", id=job_id)
            timings.append({"disk": index, "started": started, "stream_started": stream_started,
                            "completed": completed, "done": time.perf_counter() - T0, "bytes": data.get("len")})

    try:
        results = await asyncio.gather(*(copy(i, d) for i, d in enumerate(disks)), return_exceptions=True)
    finally:
        for qmp in connections.values():
            qmp.close()
    errors = [f"disk {i}: {r}" for i, r in enumerate(results) if isinstance(r, BaseException)]
    return timings, errors


def main_many(plan_path, parallel, speed, mirror=None):
    outcome = {"ok": False, "t0_wall": T0_WALL, "parallel": parallel, "speed": speed,
               "recipe": "blockdev-mirror" if mirror else "stream"}
    if mirror:
        outcome["mirror"] = mirror.describe()
    try:
        with open(plan_path) as f:
            disks = json.load(f)
        timings, errors = asyncio.run(copy_many(disks, parallel, speed, mirror))
        outcome["disks"] = len(disks)
        outcome["copied"] = len(timings)
        outcome["bytes"] = sum(t["bytes"] or 0 for t in timings)
        outcome["last_done"] = max((t["done"] for t in timings), default=0)
        durations = sorted(t["done"] - t["started"] for t in timings)
        outcome["disk_median"] = durations[len(durations) // 2] if durations else None
        # Per disk: the time outside QEMU's copy (stream started → BLOCK_JOB_COMPLETED), and,
        # disks taken in order, the gap from one disk's end to the next one's start.
        ordered = sorted(timings, key=lambda t: t["disk"])
        if ordered:
            outcome["first_start"] = ordered[0]["started"]
            outcome["copy_mean"] = sum(t["completed"] - t["stream_started"] for t in ordered) / len(ordered)
            outcome["outside_copy_mean"] = sum(t["done"] - t["started"] - (t["completed"] - t["stream_started"])
                                               for t in ordered) / len(ordered)
            gaps = [b["started"] - a["done"] for a, b in zip(ordered, ordered[1:])]
            outcome["gap_mean"] = sum(gaps) / len(gaps) if gaps else 0
        if errors:
            outcome["error"] = "; ".join(errors[:5])
        else:
            outcome["ok"] = True
    except (OSError, QMPError, ValueError, KeyError) as error:
        outcome["error"] = str(error)
    print(json.dumps(outcome), flush=True)
    return 0 if outcome["ok"] else 1


def main(argv):
    args = argv[1:]
    speed, job_id, mirror, many, parallel, flush = 0, "raw-copy", False, None, 1, False
    blockdev_mirror, options = False, MirrorOptions()
    positional = []
    while args:
        arg = args.pop(0)
        if arg == "--speed":
            speed = int(args.pop(0))
        elif arg == "--job-id":
            job_id = args.pop(0)
        elif arg == "--mirror":
            mirror = True
        elif arg == "--blockdev-mirror":
            blockdev_mirror = True
        elif arg == "--format":
            options.fmt = args.pop(0)
        elif arg == "--copy-mode":
            options.copy_mode = args.pop(0)
        elif arg == "--buf-size":
            options.buf_size = int(args.pop(0))
        elif arg == "--granularity":
            options.granularity = int(args.pop(0))
        elif arg == "--on-error":
            options.on_error = args.pop(0)
        elif arg == "--target-direct":
            options.direct = True
        elif arg == "--flush-at-pending":
            options.flush_at_pending = True
        elif arg == "--match-source-cache":
            options.match_cache = True
        elif arg == "--flush":
            flush = True
        elif arg == "--many":
            many = args.pop(0)
        elif arg == "--parallel":
            parallel = int(args.pop(0))
        else:
            positional.append(arg)
    if options.fmt not in ("qcow2", "raw") or options.copy_mode not in ("background", "write-blocking"):
        print(__doc__, file=sys.stderr)
        return 2
    if many is not None and not positional:
        return main_many(many, parallel, speed, options if blockdev_mirror else None)
    if len(positional) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    socket_path, device, destination = positional

    phases = {}
    outcome = {"ok": False, "device": device, "destination": destination, "speed": speed, "phases": phases,
               "t0_wall": T0_WALL,
               "recipe": "blockdev-mirror" if blockdev_mirror else "mirror" if mirror else "stream"}
    if blockdev_mirror:
        outcome["mirror"] = options.describe()
    try:
        qmp = QMP(socket_path)
        qmp.greeting()
        qmp.execute("qmp_capabilities")
        phases["connected"] = time.perf_counter() - T0
        if blockdev_mirror:
            mirror_one(qmp, device, destination, job_id, speed, options, phases, outcome)
        elif mirror:
            qmp.execute("drive-mirror", **{
                "device": device, "job-id": job_id, "target": destination, "format": "qcow2", "sync": "full",
                "mode": "absolute-paths", "speed": speed, "auto-dismiss": False})
            phases["snapshot"] = phases["stream_started"] = time.perf_counter() - T0
            qmp.wait_event("BLOCK_JOB_READY", "device", job_id)
            phases["ready"] = time.perf_counter() - T0
            qmp.execute("block-job-complete", device=job_id)
        else:
            qmp.execute("blockdev-snapshot-sync", **{
                "device": device, "snapshot-file": destination, "format": "qcow2", "mode": "absolute-paths"})
            phases["snapshot"] = time.perf_counter() - T0
            arguments = {"device": device, "job-id": job_id, "speed": speed, "auto-dismiss": False}
            if flush:
                arguments["auto-finalize"] = False
            qmp.execute("block-stream", **arguments)
            phases["stream_started"] = time.perf_counter() - T0
            if flush:
                while True:
                    change = qmp.wait_event("JOB_STATUS_CHANGE", "id", job_id)["data"]["status"]
                    if change == "pending":
                        break
                    if change in ("aborting", "concluded"):
                        raise QMPError(f"job {job_id} went {change} before pending")
                phases["pending"] = time.perf_counter() - T0
                reply = qmp.execute("human-monitor-command", **{"command-line": f'qemu-io {device} "flush"'})
                if reply:
                    raise QMPError(f"flush: {reply}")
                phases["flushed"] = time.perf_counter() - T0
                qmp.execute("job-finalize", id=job_id)
        event = qmp.wait_event("BLOCK_JOB_COMPLETED", "device", job_id)
        phases["completed"] = time.perf_counter() - T0
        data = event.get("data", {})
        outcome["len"] = data.get("len")
        outcome["offset"] = data.get("offset")
        if "error" in data:
            raise QMPError(f"job {job_id} completed with error: {data['error']}")
        if data.get("offset") != data.get("len"):
            raise QMPError(f"job {job_id} completed at offset {data.get('offset')} of {data.get('len')}")
        try:
            qmp.execute("job-dismiss", id=job_id)
        except QMPError:
            # Not concluded yet (never seen with QEMU 7.2): wait for it, then dismiss.
            while qmp.wait_event("JOB_STATUS_CHANGE", "id", job_id)["data"]["status"] != "concluded":
                pass
            qmp.execute("job-dismiss", id=job_id)
        phases["dismissed"] = time.perf_counter() - T0
        outcome["ok"] = True
    except (OSError, QMPError, ValueError, KeyError, subprocess.CalledProcessError) as error:
        outcome["error"] = str(error)
    print(json.dumps(outcome), flush=True)
    return 0 if outcome["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
