#!/usr/bin/env python3
# tests/s3/linkproxy.py — a TCP relay in front of the S3 server that behaves like a network link of a
# given speed: the bytes towards the client, over all connections together, pass at most RATE bytes
# per second (a token bucket of 5 ms); the client's bytes go up unlimited. Prints "port=N" once
# listening. The relay exits when WATCH_PID (the test or bench) is gone.
# Usage: linkproxy.py LISTEN_ADDR UPSTREAM_HOST UPSTREAM_PORT WATCH_PID CONTROL_DIR [RATE]
#   RATE            bytes/s at start; "-" or absent: unlimited; 0: stalled (nothing reaches the client)
#   CONTROL_DIR/rate  read every 0.1 s; while present it wins over RATE: bytes/s, or empty (unlimited)
#   CONTROL_DIR/stats written as it changes: "down=BYTES conns=N open=N" — bytes relayed towards
#                   clients, connections accepted, connections open now (the server's view)
import os
import socket
import sys
import threading
import time

listen_addr, up_host, up_port, watch, control = sys.argv[1], sys.argv[2], int(sys.argv[3]), \
    int(sys.argv[4]), sys.argv[5]
initial = sys.argv[6] if len(sys.argv) > 6 else "-"


def parse_rate(text):
    text = text.strip()
    if text in ("", "-"):
        return None
    return float(text)


class Link:
    def __init__(self, rate):
        self.lock = threading.Lock()
        self.rate = rate
        self.tokens = 0.0
        self.last = time.monotonic()
        self.down = 0
        self.conns = 0
        self.open = 0

    # Returns how many of `want` bytes may go now (> 0), waiting for the link as needed; 0 once the
    # client has gone (a stalled link must not keep a closed connection open).
    def take(self, want, gone):
        while not gone.is_set():
            with self.lock:
                rate = self.rate
                now = time.monotonic()
                if rate is None:
                    self.last = now
                    return want
                if rate > 0:
                    burst = max(rate * 0.005, 16384.0)
                    self.tokens = min(burst, self.tokens + (now - self.last) * rate)
                self.last = now
                need = min(want, 16384)
                if rate > 0 and self.tokens >= need:
                    n = min(want, int(self.tokens))
                    self.tokens -= n
                    return n
                wait = (need - self.tokens) / rate if rate > 0 else 0.05
            time.sleep(min(max(wait, 0.0005), 0.05))
        return 0

    def count(self, n=0, conns=0, open_=0):
        with self.lock:
            self.down += n
            self.conns += conns
            self.open += open_


link = Link(parse_rate(initial))


def close(s):
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


def pump_up(client, upstream, gone):
    try:
        while True:
            data = client.recv(262144)
            if not data:
                break
            upstream.sendall(data)
    except OSError:
        pass
    # the client has gone: so has the whole exchange (radosgw keeps a half-closed connection open)
    gone.set()
    try:
        upstream.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def serve(client):
    link.count(conns=1, open_=1)
    try:
        upstream = socket.create_connection((up_host, up_port))
    except OSError:
        close(client)
        link.count(open_=-1)
        return
    gone = threading.Event()
    threading.Thread(target=pump_up, args=(client, upstream, gone), daemon=True).start()
    try:
        while True:
            data = upstream.recv(262144)
            if not data:
                break
            view = memoryview(data)
            while len(view):
                n = link.take(len(view), gone)
                if n == 0:
                    raise OSError("client gone")
                client.sendall(view[:n])
                link.count(n)
                view = view[n:]
    except OSError:
        pass
    close(client)
    close(upstream)
    link.count(open_=-1)


def control_loop():
    rate_file = os.path.join(control, "rate")
    stats_file = os.path.join(control, "stats")
    last_stats = None
    while True:
        try:
            os.kill(watch, 0)
        except OSError:
            os._exit(0)
        try:
            with open(rate_file) as f:
                r = parse_rate(f.read())
        except FileNotFoundError:
            r = parse_rate(initial)
        except (OSError, ValueError):
            r = link.rate
        with link.lock:
            link.rate = r
        with link.lock:
            stats = "down=%d conns=%d open=%d\n" % (link.down, link.conns, link.open)
        if stats != last_stats:
            tmp = stats_file + ".tmp"
            with open(tmp, "w") as f:
                f.write(stats)
            os.replace(tmp, stats_file)
            last_stats = stats
        time.sleep(0.1)


def main():
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((listen_addr, 0))
    srv.listen(64)
    print("port=%d" % srv.getsockname()[1], flush=True)
    threading.Thread(target=control_loop, daemon=True).start()
    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


main()
