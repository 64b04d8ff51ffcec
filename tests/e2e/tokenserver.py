#!/usr/bin/python3
# tests/e2e/tokenserver.py — a stand-in for Keycloak's token endpoint (OpenID Connect password grant):
# POST grant_type=password&client_id=&username=&password= -> 200 {"access_token": ...} when they match
# USER/PASSWORD from the environment, else 401. Prints "port=N" once listening; counts grants in COUNT_FILE.
import json
import os
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(n).decode())
        good = (form.get("grant_type") == ["password"] and form.get("client_id") == ["shasta"]
                and form.get("username") == [os.environ["USER_NAME"]]
                and form.get("password") == [os.environ["USER_PASSWORD"]])
        body = json.dumps({"access_token": "kc-e2e-access-token", "token_type": "Bearer"} if good
                          else {"error": "invalid_grant"}).encode()
        with open(os.environ["COUNT_FILE"], "a") as f:
            f.write("ok\n" if good else "denied\n")
        self.send_response(200 if good else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


srv = HTTPServer((sys.argv[1], 0), Handler)
print("port=%d" % srv.server_address[1], flush=True)
srv.serve_forever()
