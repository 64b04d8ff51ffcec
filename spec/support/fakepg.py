#!/usr/bin/env python3
# spec/support/fakepg.py — a man in the middle posing as a PostgreSQL server on loopback, for the
# specs of pgr's connection policy: it speaks the wire protocol's start (SSLRequest, StartupMessage,
# an authentication request) and writes down any password a client sends it.
# Usage: fakepg.py ADDR WATCH_PID MODE LOG [CERT KEY]       (exits when WATCH_PID is gone)
#   MODE notls         refuses TLS ('N'), then asks for the password in clear
#        tls-cleartext accepts TLS (CERT/KEY: a certificate of its own), then asks in clear
#        tls-md5       accepts TLS, then asks for an MD5 password (a relayable challenge)
# LOG gets one line per event: "ssl-request", "tls", "startup user=U", "password <what was sent>".
# Prints "port=N" once it listens.
import os
import socket
import ssl
import struct
import sys
import threading
import time

addr, watch, mode, log = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
cert = sys.argv[5] if len(sys.argv) > 6 else None
key = sys.argv[6] if len(sys.argv) > 6 else None
lock = threading.Lock()

SSL_REQUEST, GSSENC_REQUEST, PROTOCOL_3 = 80877103, 80877104, 196608


def note(line):
    with lock, open(log, "a") as f:
        f.write(line + "\n")


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def error(s, code, message):
    fields = b"SFATAL\0" + b"C" + code.encode() + b"\0" + b"M" + message.encode() + b"\0\0"
    s.sendall(b"E" + struct.pack("!I", 4 + len(fields)) + fields)


def serve(s):
    try:
        while True:
            n, code = struct.unpack("!II", recv_exact(s, 8))
            if code == GSSENC_REQUEST:
                s.sendall(b"N")
                continue
            if code == SSL_REQUEST:
                note("ssl-request")
                if mode == "notls":
                    s.sendall(b"N")
                    continue
                s.sendall(b"S")
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(cert, key)
                s = ctx.wrap_socket(s, server_side=True)
                note("tls")
                continue
            break
        body = recv_exact(s, n - 8)
        if code != PROTOCOL_3:
            return
        parts = body.split(b"\0")
        params = dict(zip(parts[0::2], parts[1::2]))
        note("startup user=" + params.get(b"user", b"?").decode(errors="replace"))
        if mode == "tls-md5":
            s.sendall(b"R" + struct.pack("!II", 12, 5) + b"salt")
        else:
            s.sendall(b"R" + struct.pack("!II", 8, 3))
        kind = recv_exact(s, 1)
        (n,) = struct.unpack("!I", recv_exact(s, 4))
        payload = recv_exact(s, n - 4)
        if kind == b"p":
            note("password " + payload.rstrip(b"\0").decode(errors="replace"))
        error(s, "28P01", "password authentication failed")
    except (EOFError, OSError, ssl.SSLError):
        pass
    finally:
        try:
            s.close()
        except OSError:
            pass


def watchdog():
    while True:
        try:
            os.kill(watch, 0)
        except OSError:
            os._exit(0)
        time.sleep(1)


srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((addr, 0))
srv.listen(16)
threading.Thread(target=watchdog, daemon=True).start()
print("port=%d" % srv.getsockname()[1], flush=True)
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
