# Certificates and kubeconfig: a CA made at start with the openssl CLI, a server cert for 127.0.0.1,
# and the kubeconfig/env/admin.json files that clients (kubectl, pgr, tests) read from DIR.
import base64
import json
import os
import secrets
import subprocess


def make_pki(d):
    os.makedirs(d, exist_ok=True)

    def run(*args, **kw):
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=d, **kw)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
        "-subj", "/CN=kubesim-ca", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature")
    run("openssl", "req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=kube-apiserver")
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
                "DNS:kubernetes.default.svc\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "3650", "-extfile", "server.ext")
    for f in ("ca.key", "server.key"):
        os.chmod(os.path.join(d, f), 0o600)
    return os.path.join(d, "ca.crt"), os.path.join(d, "server.crt"), os.path.join(d, "server.key")


def new_token():
    return secrets.token_hex(24)


def write_client_files(dirpath, port, ca_file, token, admin_token, net, log):
    ca = base64.b64encode(open(ca_file, "rb").read()).decode()
    server = "https://127.0.0.1:%d" % port
    kc = """apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: %s
    server: %s
  name: kubesim
contexts:
- context:
    cluster: kubesim
    namespace: default
    user: kubernetes-admin
  name: kubernetes-admin@kubesim
current-context: kubernetes-admin@kubesim
preferences: {}
users:
- name: kubernetes-admin
  user:
    token: %s
""" % (ca, server, token)
    _write(os.path.join(dirpath, "kubeconfig"), kc, 0o600)
    admin = {"url": server + "/kubesim/v1/admin", "token": admin_token, "server": server,
             "ca": ca_file, "token_kubeconfig": token, "net": net, "port": port,
             "log": log}
    _write(os.path.join(dirpath, "admin.json"), json.dumps(admin, indent=2) + "\n", 0o600)
    env = ("export KUBECONFIG=%s\nexport KUBESIM_DIR=%s\nexport KUBESIM_SERVER=%s\nexport KUBESIM_CA=%s\n"
           "export KUBESIM_TOKEN=%s\nexport KUBESIM_ADMIN_URL=%s\nexport KUBESIM_ADMIN_TOKEN=%s\n"
           "export KUBESIM_NET=%s\n" % (os.path.join(dirpath, "kubeconfig"), dirpath, server, ca_file, token,
                                        admin["url"], admin_token, net))
    _write(os.path.join(dirpath, "env"), env, 0o600)


def _write(path, text, mode):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
