#!/usr/bin/env python3
# tests/host/dnsd.py — a tiny authoritative DNS server on loopback for tests/host/static.t: answers A
# queries for the names it is given, NOERROR with no records for other types of those names, and
# NXDOMAIN for any other name. Enough for a resolver (musl's, reading /etc/resolv.conf) to be real.
# Usage: dnsd.py ADDR WATCH_PID NAME=IPV4...   prints "ready" once listening on ADDR:53 (UDP);
#        exits when WATCH_PID is gone. Each query is logged on stderr as "NAME TYPE".
import os
import socket
import struct
import sys

addr, watch = sys.argv[1], int(sys.argv[2])
table = {}
for arg in sys.argv[3:]:
    name, ip = arg.split("=", 1)
    table[name.lower().rstrip(".")] = socket.inet_aton(ip)

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((addr, 53))
sock.settimeout(1.0)
print("ready", flush=True)


def parse_question(msg):
    labels, i = [], 12
    while True:
        n = msg[i]
        if n == 0:
            i += 1
            break
        labels.append(msg[i + 1:i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    qtype, qclass = struct.unpack("!HH", msg[i:i + 4])
    return ".".join(labels).lower(), qtype, qclass, i + 4


while True:
    try:
        os.kill(watch, 0)
    except OSError:
        break
    try:
        msg, peer = sock.recvfrom(512)
    except socket.timeout:
        continue
    if len(msg) < 17:
        continue
    qid, flags, qd = struct.unpack("!HHH", msg[:6])
    if qd != 1:
        continue
    name, qtype, qclass, end = parse_question(msg)
    print(name, qtype, file=sys.stderr, flush=True)
    question = msg[12:end]
    rd = flags & 0x0100
    if name not in table:
        sock.sendto(struct.pack("!HHHHHH", qid, 0x8003 | rd | 0x0480, 1, 0, 0, 0) + question, peer)
        continue
    answers = b""
    count = 0
    if qtype == 1 and qclass == 1:
        answers = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + table[name]
        count = 1
    sock.sendto(struct.pack("!HHHHHH", qid, 0x8000 | rd | 0x0480, 1, count, 0, 0) + question + answers, peer)
