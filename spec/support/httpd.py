#!/usr/bin/env python3
# spec/support/httpd.py — a small real HTTP/1.1 server for the pgr.http specs (plain or TLS):
# echoes requests, counts connections (keep-alive checks), sleeps, cuts. Prints "port=N" once up.
# Usage: httpd.py ADDR WATCH_PID [CERT KEY]     (exits when WATCH_PID is gone)
# Routes: /echo (method, headers, body as JSON), /status/N, /sleep/SECONDS, /bytes/N,
#         /conn (the id of this TCP connection), /cut (headers, half a body, then RST),
#         /s3-MODE?list-type=2... a ListObjectsV2 server that never ends its listing (MODE: loop repeats
#         its continuation token, cycle repeats its keys, empty sends no keys, grow sends new keys for
#         ever; each gives up after 5000 pages), /s3-count/MODE (the pages it served)
import json
import os
import socket
import ssl
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

addr, watch = sys.argv[1], int(sys.argv[2])
cert = sys.argv[3] if len(sys.argv) > 4 else None
key = sys.argv[4] if len(sys.argv) > 4 else None
counter = {"n": 0}
listed = {}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        with lock:
            counter["n"] += 1
            self.conn_id = counter["n"]

    def log_message(self, *args):
        pass

    def send(self, status, body, ctype="application/json", extra=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or []):
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        p = self.path.split("?")[0]
        if p.startswith("/echo"):
            out = {"method": self.command, "path": self.path,
                   "headers": {k.lower(): v for k, v in self.headers.items()},
                   "body": body.decode("latin-1")}
            self.send(200, json.dumps(out).encode(), extra=[("X-Multi", "a"), ("X-Multi", "b")])
        elif p.startswith("/status/"):
            self.send(int(p.split("/")[2]), b"status body", "text/plain")
        elif p.startswith("/sleep/"):
            time.sleep(float(p.split("/")[2]))
            self.send(200, b"slept", "text/plain")
        elif p.startswith("/s3-count/"):
            self.send(200, str(listed.get(p.split("/")[2], 0)).encode(), "text/plain")
        elif p.startswith("/s3-"):
            self.s3_list(p[4:].split("/")[0])
        elif p.startswith("/bytes/"):
            self.send(200, b"x" * int(p.split("/")[2]), "application/octet-stream")
        elif p.startswith("/conn"):
            self.send(200, str(self.conn_id).encode(), "text/plain")
        elif p.startswith("/cut"):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"y" * 50000)
            self.wfile.flush()
            s = self.connection
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
            self.close_connection = True
        else:
            self.send(404, b"no route", "text/plain")

    def s3_list(self, mode):
        with lock:
            n = listed[mode] = listed.get(mode, 0) + 1
        if n > 5000:  # a client that never stops would otherwise keep the spec running for ever
            return self.send(500, b"<Error><Code>InternalError</Code><Message>too many pages</Message></Error>",
                             "application/xml")
        if mode == "loop":
            keys, token = ["k%06d" % n], "the-same-token"
        elif mode == "cycle":
            keys, token = ["k1", "k2"], "A" if n % 2 else "B"
        elif mode == "empty":
            keys, token = [], "t%d" % n
        else:
            keys, token = ["k%06d-%d" % (n, i) for i in range(10)], "t%d" % n
        contents = "".join("<Contents><Key>%s</Key><Size>1</Size><ETag>&quot;x&quot;</ETag>"
                           "<LastModified>2024-01-01T00:00:00.000Z</LastModified></Contents>" % k for k in keys)
        body = ('<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>b</Name><KeyCount>%d</KeyCount>'
                "<IsTruncated>true</IsTruncated>%s<NextContinuationToken>%s</NextContinuationToken>"
                "</ListBucketResult>" % (len(keys), contents, token))
        self.send(200, body.encode(), "application/xml")

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = handle_any


def watchdog():
    while True:
        try:
            os.kill(watch, 0)
        except OSError:
            os._exit(0)
        time.sleep(1)


srv = ThreadingHTTPServer((addr, 0), Handler)
srv.daemon_threads = True
if cert:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
threading.Thread(target=watchdog, daemon=True).start()
print("port=%d" % srv.server_address[1], flush=True)
srv.serve_forever()
