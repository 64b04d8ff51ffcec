#!/usr/bin/env bash
# tests/e2e/repl_status.t — the REPL knows the system, driven on a real terminal (tmux) against the
# sandbox: the banner (version, site, Kubernetes context and server, S3 endpoint), help(), a service's
# status, SQL on its master, its pods' logs through the API, its backups; with no kubeconfig the banner
# says so, the helpers fail with the reason and the prompt stays up. Also the simulator's pods/log.
. "$(dirname "$0")/lib.sh"
E2E_NODES=0 e2e_up
e2e_s3_up
site_without_nodes
backup spire-postgres
s3_upload "$DUMP" "$MANIFEST"
TERMS=()
cleanup_terms() { local s; for s in "${TERMS[@]}"; do tmux -L "$s" kill-server 2>/dev/null; done; e2e_cleanup; }
trap cleanup_terms EXIT

# term NAME ENV...: a REPL on its own tmux server, with ENV; screen NAME / line NAME TEXT / wait NAME TEXT
term() {
  local name=$1 sock=pgr-repl-$$-$1
  shift
  TERMS+=("$sock")
  mkdir -p "$E2E/home-$name"
  tmux -L "$sock" new-session -d -s r -x 220 -y 60 \
    "env HOME=$E2E/home-$name XDG_STATE_HOME= NO_COLOR=1 $* $PGR repl; sleep 60"
}
screen() { tmux -L "pgr-repl-$$-$1" capture-pane -p -J -t r -S -400; }
line() { tmux -L "pgr-repl-$$-$1" send-keys -t r -l "$2"; tmux -L "pgr-repl-$$-$1" send-keys -t r Enter; }
# wait NAME FIXED-TEXT: until the screen shows it (60 s at most: the machine may be busy)
wait() {
  local i
  for ((i = 0; i < 1200; i++)); do screen "$1" | grep -qF -- "$2" && return 0; sleep 0.05; done
  screen "$1" | tail -40 | sed 's/^/# | /'
  return 1
}

# wait_re NAME REGEX: until the screen matches the extended regular expression
wait_re() {
  local i
  for ((i = 0; i < 1200; i++)); do screen "$1" | grep -qE -- "$2" && return 0; sleep 0.05; done
  screen "$1" | tail -20 | sed 's/^/# | /'
  return 1
}
# wait_line NAME TEXT: until a whole line of the screen is TEXT
wait_line() {
  local i
  for ((i = 0; i < 1200; i++)); do screen "$1" | grep -qxF -- "$2" && return 0; sleep 0.05; done
  screen "$1" | tail -20 | sed 's/^/# | /'
  return 1
}

PORT=$(sed -n 's/^export KUBESIM_SERVER=//p' "$SIM/env")
term up "KUBECONFIG=$KUBECONFIG PGR_SITE=$PGR_SITE PGR_STATE_DIR=$STATE"
wait up "help() lists the helpers"
banner=$(screen up | grep -F "help() lists the helpers")
case $banner in "pgr "[0-9]*" | site $E2E/site.lua | Kubernetes kubernetes-admin@kubesim at $PORT | S3 $S3_ENDPOINT/postgres-backup | help() lists the helpers") r=0 ;; *) r=1 ;; esac
ok $r "the banner names the version, the site file, the context and API server, the S3 endpoint and bucket"
[ $r = 0 ] || echo "# banner: $banner"

line up 'help()'
wait up "Read-only unless a call's name says otherwise"; ok $? "help() answers"
screen up | grep -qE '^  service\(NAME\) +a service.s handle: :status\(\) :sql\(query \[, db\]\) :pods\(\) :secrets\(\) :backups\(\) :logs\(pod \[, n\]\) :runs\(\)$'
ok $? "help() lists service(NAME) and its methods"
screen up | grep -qE '^  k8s +the Kubernetes API' && screen up | grep -qE '^  s3 +S3 backups' && screen up | grep -qE '^  pg +PostgreSQL'
ok $? "help() lists the k8s, s3 and pg modules, one line each"

line up 'service("spire"):status()'
wait up "spire (spire/spire-postgres): "; ok $? 'service("spire"):status() shows the status screen'
screen up | grep -qE '^  logins      postgres ok, service_account ok, spire ok, standby ok$'; ok $? "with each login"
screen up | grep -qE "^  backups     newest spire-postgres-[0-9T:-]+ \[csm\], .*, complete$"; ok $? "and the backup in S3"

line up 'spire = service "spire"'
line up 'spire:sql("select 1")'
wait up "(1 row)"; ok $? ':sql("select 1") prints the rows as psql does'
screen up | grep -A3 -F ' ?column? ' | grep -qE '^ +1 $'; ok $? "the value is there"
line up 'spire:sql("select count(*) as n from selectors", "spire")[1].n'
wait_line up "400"; ok $? ":sql(query, db) runs in that database and returns the rows"
line up 'spire:sql("delete from selectors", "spire")'
wait up "cannot execute DELETE in a read-only transaction"; ok $? ":sql is read-only"
is "the rows are still there" "$(sql spire-postgres spire 'select count(*) from selectors')" 400

# the master's log: its PostgreSQL server's (kubesim's pods/log), or Patroni's where the simulator runs it
MASTER_LOG='database system is ready to accept connections|leader'
line up 'spire:logs("master", 5)'
wait_re up "$MASTER_LOG"; ok $? ":logs(pod, n) shows the tail of the master's log through the API"
line up 'select(2, spire:logs("no-such-pod"))'
wait up 'pod spire/no-such-pod not found (kubectl get pod -n spire)'; ok $? "a pod that does not exist is named"

line up 'spire:backups()[1].name'
wait_line up "$(basename "$DUMP" .psql)"; ok $? ":backups() lists the backups in S3"
line up 'spire:secrets()[1].data'
wait up 'password = <redacted>, username = "postgres"'; ok $? ":secrets() shows the usernames, the passwords redacted"

# --- no kubeconfig -------------------------------------------------------------------------------
term none "KUBECONFIG=$E2E/no-such-kubeconfig PGR_SITE=$PGR_SITE PGR_STATE_DIR=$STATE"
wait none "help() lists the helpers"
screen none | grep -qF "| Kubernetes: none (no configuration: $E2E/no-such-kubeconfig not found"
ok $? "without a kubeconfig the banner says so"
line none 'service("spire"):pods()'
wait none "kubeconfig: no configuration: $E2E/no-such-kubeconfig not found" &&
  screen none | grep -qE "^nil +kubeconfig: no configuration: $E2E/no-such-kubeconfig not found"
ok $? "a helper fails with the reason (nil, err)"
line none '"verdict: " .. service("spire"):status().verdict'
wait none "verdict: unknown"; ok $? "the status is unknown, not an error"
line none '6 * 7'
wait_line none "42"; ok $? "the REPL stays up"

# --- no password on any screen -------------------------------------------------------------------
leaks=0
for pw in $(kubectl get secrets -n spire -o json | jq -r '.items[] | select(.metadata.name | endswith(".credentials")) | .data.password'); do
  p=$(printf %s "$pw" | base64 -d)
  { screen up; screen none; } | grep -qF -- "$p" && leaks=$((leaks + 1))
done
is "no password appears on the screens" "$leaks" 0

# --- the simulator's pods/log, through the real kubectl ------------------------------------------
m=$(kubectl get pods -n spire -l cluster-name=spire-postgres,spilo-role=master -o jsonpath='{.items[0].metadata.name}')
is "kubectl logs --tail=2 gives 2 lines of the master's PostgreSQL log" "$(kubectl logs -n spire "$m" --tail=2 | wc -l)" 2
is "kubectl logs --limit-bytes=10 gives 10 bytes" "$(kubectl logs -n spire "$m" --limit-bytes=10 | wc -c)" 10
kubectl logs -n spire "$m" | grep -qE "$MASTER_LOG"; ok $? "the whole log is the master's"
kubectl logs -n spire no-such-pod >/dev/null 2>"$E2E/logs.err"
grep -q 'pods "no-such-pod" not found' "$E2E/logs.err"; ok $? "a missing pod is a 404"
is "a pod without a server has an empty log" "$(kubectl logs -n spire deploy/spire-jwks 2>/dev/null | wc -c)" 0
done_testing
