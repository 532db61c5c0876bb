#!/usr/bin/env python3
"""The raw-QEMU baseline for scripts/bench: the least a client must do to copy one
running disk to a new qcow2 image over QMP, with nothing but the standard library.

    raw_qmp_copy.py SOCKET DEVICE DESTINATION [--speed BYTES] [--job-id ID]

1. connect to the QMP unix socket, read the greeting, `qmp_capabilities`;
2. `blockdev-snapshot-sync {device, snapshot-file, format: qcow2, mode: absolute-paths}`;
3. `block-stream {device, job-id, speed, auto-dismiss: false}`;
4. block on the socket until the BLOCK_JOB_COMPLETED event for the job (no polling);
5. `job-dismiss`.

Exit 0 only if every command succeeded and the event carried no error. One JSON line
on stdout reports the outcome and the time of each phase (seconds since start).
"""
import json
import socket
import sys
import time

T0 = time.perf_counter()


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


def main(argv):
    args = argv[1:]
    speed, job_id = 0, "raw-copy"
    positional = []
    while args:
        arg = args.pop(0)
        if arg == "--speed":
            speed = int(args.pop(0))
        elif arg == "--job-id":
            job_id = args.pop(0)
        else:
            positional.append(arg)
    if len(positional) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    socket_path, device, destination = positional

    phases = {}
    outcome = {"ok": False, "device": device, "destination": destination, "speed": speed, "phases": phases}
    try:
        qmp = QMP(socket_path)
        qmp.greeting()
        qmp.execute("qmp_capabilities")
        phases["connected"] = time.perf_counter() - T0
        qmp.execute("blockdev-snapshot-sync", **{
            "device": device, "snapshot-file": destination, "format": "qcow2", "mode": "absolute-paths"})
        phases["snapshot"] = time.perf_counter() - T0
        qmp.execute("block-stream", **{"device": device, "job-id": job_id, "speed": speed, "auto-dismiss": False})
        phases["stream_started"] = time.perf_counter() - T0
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
    except (OSError, QMPError, ValueError) as error:
        outcome["error"] = str(error)
    print(json.dumps(outcome), flush=True)
    return 0 if outcome["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
