#!/usr/bin/env python3
# tests/s3/cutproxy.py — a TCP relay in front of the S3 server that cuts connections mid-body on
# demand: the first CUTS connections carrying more than AFTER bytes towards the client are closed
# (RST) right after exactly AFTER bytes, as a dropped link would. Prints "port=N" once listening.
# Usage: cutproxy.py LISTEN_ADDR UPSTREAM_HOST UPSTREAM_PORT AFTER CUTS WATCH_PID [MODE]
# MODE "unranged": once a connection has been cut, later answers of 206 Partial Content reach the
# client as "200 OK" without their Content-Range, as from a cache or proxy that mangles ranges: a
# client must refuse such an answer to a resume rather than take its bytes for the ones it asked for.
# MODE "upload": the cut is counted on the bytes towards the server instead (a request body, a part of
# a multipart upload, dies after AFTER bytes).
# The relay exits when WATCH_PID (the test process) is gone. A control file is not needed: the
# spec starts one relay per scenario.
import os
import socket
import struct
import sys
import threading
import time

listen_addr, up_host, up_port, after, cuts, watch = sys.argv[1], sys.argv[2], int(sys.argv[3]), \
    int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
mode = sys.argv[7] if len(sys.argv) > 7 else ""
lock = threading.Lock()
state = {"cuts_left": cuts, "cut": 0}


def hard_close(s):
    try:
        # SO_LINGER 0: close sends RST, like a link that died, not a clean end of stream
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        # wakes the relay thread blocked in recv on this socket: the fd is only released (and the
        # RST sent) once no thread is inside a system call on it
        s.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


def pump_up(client, upstream):
    sent = 0
    try:
        while True:
            data = client.recv(65536)
            if not data:
                break
            if mode == "upload" and sent + len(data) > after:
                with lock:
                    cut_now = state["cuts_left"] > 0
                    if cut_now:
                        state["cuts_left"] -= 1
                        state["cut"] += 1
                if cut_now:
                    upstream.sendall(data[: after - sent])
                    time.sleep(0.05)
                    hard_close(client)
                    hard_close(upstream)
                    return
            upstream.sendall(data)
            sent += len(data)
    except OSError:
        pass
    try:
        upstream.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def serve(client):
    try:
        upstream = socket.create_connection((up_host, up_port))
    except OSError:
        hard_close(client)
        return
    threading.Thread(target=pump_up, args=(client, upstream), daemon=True).start()
    sent = 0
    with lock:
        will_cut = state["cuts_left"] > 0 and mode != "upload"
        unrange = mode == "unranged" and state["cut"] > 0
    head = b""
    try:
        while True:
            data = upstream.recv(65536)
            if not data:
                break
            if unrange:
                head += data
                end = head.find(b"\r\n\r\n")
                if end < 0:
                    continue
                lines = head[:end].split(b"\r\n")
                if lines[0].split(b" ")[1:2] == [b"206"]:
                    lines = [b"HTTP/1.1 200 OK"] + [h for h in lines[1:] if not h.lower().startswith(b"content-range:")]
                data, head, unrange = b"\r\n".join(lines) + head[end:], b"", False
            if will_cut and sent + len(data) > after:
                with lock:
                    if state["cuts_left"] > 0:
                        state["cuts_left"] -= 1
                        state["cut"] += 1
                        cut_now = True
                    else:
                        cut_now = False
                if cut_now:
                    client.sendall(data[: after - sent])
                    time.sleep(0.05)
                    hard_close(client)
                    hard_close(upstream)
                    return
                will_cut = False
            client.sendall(data)
            sent += len(data)
    except OSError:
        pass
    hard_close(client)
    hard_close(upstream)


def watchdog():
    while True:
        try:
            os.kill(watch, 0)
        except OSError:
            os._exit(0)
        time.sleep(1)


def main():
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((listen_addr, 0))
    srv.listen(64)
    print("port=%d" % srv.getsockname()[1], flush=True)
    threading.Thread(target=watchdog, daemon=True).start()
    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


main()
