# ksim: the Kubernetes API server, controllers and postgres-operator simulator behind tests/kubesim/kubesim.
# Python 3 standard library only; see ../README.md for the interface and what is simplified.
