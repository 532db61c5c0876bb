#!/usr/bin/env python3
"""A guest-like writer for scripts/bench: random writes at a steady rate into a QEMU NBD
export, timing each one, with nothing but the standard library.

    nbd_writer.py SOCKET EXPORT OUTPUT.json [--rate BYTES_PER_S] [--block BYTES]
                  [--seed N] [--avoid BYTE] [--duration SECONDS]

Connects to the NBD server on unix socket SOCKET (QMP `nbd-server-start` +
`block-export-add {type: nbd, writable: true}`), fixed newstyle handshake with
NBD_OPT_EXPORT_NAME, then sends NBD_CMD_WRITE requests of BLOCK bytes (default 64 KiB)
at random BLOCK-aligned offsets, one in flight at a time, on a fixed schedule of
RATE / BLOCK writes per second (default 20 MiB/s): write i is due at start + i × BLOCK /
RATE; a write that comes due while the previous one is still waiting is sent as soon
as that one is answered (the writer catches up, so the achieved rate shows how long
writes were held up). Write i fills its block with byte 1 + i mod 255, skipping AVOID
(the image's own pattern), so the final content can be checked offline.

Runs until SIGTERM or SIGINT (or DURATION), then NBD_CMD_DISC, and writes OUTPUT.json:
{"ok", "export_size", "block", "rate", "started", "stopped", "errors",
 "writes": [[sent (wall clock, s), latency (s), offset, byte], ...]} in the order sent.
Exit 0 only if every write was answered without error.
"""
import json
import random
import signal
import socket
import struct
import sys
import time

NBD_MAGIC = b"NBDMAGIC"
IHAVEOPT = 0x49484156454F5054
FLAG_FIXED_NEWSTYLE = 1
FLAG_NO_ZEROES = 2
OPT_EXPORT_NAME = 1
REQUEST_MAGIC = 0x25609513
REPLY_MAGIC = 0x67446698
CMD_WRITE = 1
CMD_DISC = 2

STOP = False


def on_signal(number, frame):
    global STOP
    STOP = True


def receive(sock, length):
    data = b""
    while len(data) < length:
        chunk = sock.recv(length - len(data))
        if not chunk:
            raise OSError("NBD connection closed by the server")
        data += chunk
    return data


def handshake(sock, export):
    if receive(sock, 8) != NBD_MAGIC:
        raise OSError("not an NBD server")
    (magic,) = struct.unpack(">Q", receive(sock, 8))
    if magic != IHAVEOPT:
        raise OSError("NBD server is not newstyle")
    (server_flags,) = struct.unpack(">H", receive(sock, 2))
    if not server_flags & FLAG_FIXED_NEWSTYLE:
        raise OSError("NBD server is not fixed newstyle")
    no_zeroes = server_flags & FLAG_NO_ZEROES
    sock.sendall(struct.pack(">I", FLAG_FIXED_NEWSTYLE | no_zeroes))
    name = export.encode()
    sock.sendall(struct.pack(">QII", IHAVEOPT, OPT_EXPORT_NAME, len(name)) + name)
    size, _transmission_flags = struct.unpack(">QH", receive(sock, 10))
    if not no_zeroes:
        receive(sock, 124)
    return size


def main(argv):
    args = argv[1:]
    rate, block, seed, avoid, duration = 20 << 20, 64 << 10, 1, None, None
    positional = []
    while args:
        arg = args.pop(0)
        if arg == "--rate":
            rate = int(args.pop(0))
        elif arg == "--block":
            block = int(args.pop(0))
        elif arg == "--seed":
            seed = int(args.pop(0))
        elif arg == "--avoid":
            avoid = int(args.pop(0), 0)
        elif arg == "--duration":
            duration = float(args.pop(0))
        else:
            positional.append(arg)
    if len(positional) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    path, export, output = positional
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    values = [v for v in range(1, 256) if v != avoid]
    buffers = {v: bytes([v]) * block for v in values}
    writes, errors = [], 0
    outcome = {"ok": False, "block": block, "rate": rate, "seed": seed, "writes": writes}
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        size = handshake(sock, export)
        outcome["export_size"] = size
        blocks = size // block
        rng = random.Random(seed)
        interval = block / rate
        started = time.perf_counter()
        outcome["started"] = time.time()
        index = 0
        while not STOP:
            due = started + index * interval
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
                if STOP:
                    break
            if duration is not None and time.perf_counter() - started >= duration:
                break
            offset = rng.randrange(blocks) * block
            value = values[index % len(values)]
            sent_wall = time.time()
            sent = time.perf_counter()
            sock.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_WRITE, index, offset, block) + buffers[value])
            magic, error, handle = struct.unpack(">IIQ", receive(sock, 16))
            latency = time.perf_counter() - sent
            if magic != REPLY_MAGIC or handle != index:
                raise OSError(f"bad NBD reply: magic {magic:#x}, handle {handle} for {index}")
            if error:
                errors += 1
            else:
                writes.append([sent_wall, latency, offset, value])
            index += 1
        outcome["stopped"] = time.time()
        sock.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_DISC, index, 0, 0))
        outcome["errors"] = errors
        outcome["ok"] = errors == 0
    except OSError as error:
        outcome["error"] = str(error)
        outcome["stopped"] = time.time()
    finally:
        sock.close()
    with open(output, "w") as f:
        json.dump(outcome, f)
    return 0 if outcome["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
