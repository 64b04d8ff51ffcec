#!/bin/sh
# unit.t — kubesim's own unit tests (selectors, patches, store rules, Job validation, deletion); TAP.
# Needs nothing but python3: no server, no PostgreSQL.
exec python3 "$(dirname "$0")/test_ksim.py"
