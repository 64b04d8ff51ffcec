#!/usr/bin/env bash
# replicas.t — what the simulated Spilo/Patroni/operator do around replicas, with the real kubectl and
# psql: replicas made by pg_basebackup as standby with the password the pod got at its start, then
# streaming; a wrong standby password leaves a Ready pod whose database fails (its log and Patroni's
# status say why); readiness with and without enable_readiness_probe; fail-over to an in-sync replica;
# the operator's periodic sync (secrets re-created, roles ALTERed, a failed login logged and retried);
# enable_persistent_volume_claim_deletion=false keeping the old data. One small cluster, 2 instances.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
KS=$HERE/kubesim
T=$(mktemp -d /tmp/kubesim-replicas.XXXXXX)
SIM=$T/sim
trap '"$KS" down "$SIM" >/dev/null 2>&1; rm -rf "$T"' EXIT
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

n=0 failed=0
ok() { n=$((n + 1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=$((failed + 1)); fi; }
is() { if [ "$2" = "$3" ]; then ok 0 "$1"; else ok 1 "$1"; echo "#   got: '$2'"; echo "#   expected: '$3'"; fi; }
# until_ DESC SECONDS CODE: ok once the shell code CODE succeeds (evaluated anew at each poll), not ok
# after SECONDS
until_() {
  local d=$1 t=$2 end
  end=$((SECONDS + t))
  while ! eval "$3" >"$T/out" 2>&1; do
    if [ "$SECONDS" -ge "$end" ]; then ok 1 "$d"; sed 's/^/# /' "$T/out" | tail -20; return 1; fi
    sleep 0.3
  done
  ok 0 "$d"
}

# the operator's sync runs every 2 s here (its real default is 30 min)
"$KS" up "$SIM" --fixture none --operator resync_period=2s --operator repair_period=2s >"$T/up.log" 2>&1 ||
  { echo "1..1"; echo "not ok 1 - kubesim up"; sed 's/^/# /' "$T/up.log"; exit 1; }
export KUBECONFIG=$SIM/kubeconfig
NS=db C=acid-app

kubectl create namespace "$NS" >/dev/null
cluster_yaml() {
  cat <<EOF
apiVersion: acid.zalan.do/v1
kind: postgresql
metadata: {name: $C, namespace: $NS}
spec:
  teamId: acid
  numberOfInstances: ${1:-2}
  postgresql: {version: "14"}
  volume: {size: 1Gi}
  users: {app: [createdb]}
  databases: {app: app}
EOF
}
cluster_yaml | kubectl create -f - >/dev/null

secret_pw() { kubectl get secret "$1.$C.credentials" -n "$NS" -o jsonpath='{.data.password}' | base64 -d; }
status() { kubectl get postgresql "$C" -n "$NS" -o jsonpath='{.status.PostgresClusterStatus}'; }
pod_ip() { kubectl get pod "$1" -n "$NS" -o jsonpath='{.status.podIP}'; }
master() { kubectl get pods -n "$NS" -l "application=spilo,cluster-name=$C,spilo-role=master" -o jsonpath='{.items[*].metadata.name}'; }
# psql_at POD USER SQL: over TCP (TLS) to the pod's IP with the user's secret password
psql_at() { PGPASSWORD=$(secret_pw "$2") PGCONNECT_TIMEOUT=5 "$PGBIN/psql" -X -Atq -h "$(pod_ip "$1")" -U "$2" -d postgres -c "$3"; }
streaming() { psql_at "$(master)" postgres "select count(*) from pg_stat_replication where state = 'streaming'"; }
ready() { kubectl get pod "$1" -n "$NS" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}'; }
patroni_state() { kubectl get pod "$1" -n "$NS" -o jsonpath='{.metadata.annotations.status}' | jq -r .state; }
running() { [ "$(status)" = Running ]; }
cluster_info() { "$KS" admin "$SIM" "{\"op\":\"cluster\",\"cluster\":\"$C\"}"; }

until_ "the cluster becomes Running" 90 running
is "the leader is $C-0, labelled master" "$(master)" "$C-0"
is "$C-1 is labelled replica by Patroni" "$(kubectl get pod "$C-1" -n "$NS" -o jsonpath='{.metadata.labels.spilo-role}')" replica
is "the replica streams from the master (pg_stat_replication)" "$(streaming)" 1
is "the replica is a real standby on its own pod IP (in recovery)" "$(psql_at "$C-1" postgres 'select pg_is_in_recovery()')" t
psql_at "$(master)" postgres "create table t(x int); insert into t select generate_series(1, 100)" >/dev/null
until_ "a write on the master reaches the replica" 30 'test "$(psql_at "$C-1" postgres "select count(*) from t")" = 100'
grep -q "bootstrapped from leader '$C-0'" <(kubectl logs -n "$NS" "$C-1"); ok $? "kubectl logs shows Patroni's replica bootstrap"
is "the replica's pod env names the standby secret (PGPASSWORD_STANDBY from secretKeyRef)" \
   "$(kubectl get pod "$C-1" -n "$NS" -o jsonpath='{.spec.containers[0].env[?(@.name=="PGPASSWORD_STANDBY")].valueFrom.secretKeyRef.name}')" \
   "standby.$C.credentials"

# ------------------------------------------------------------------ a wrong standby password
# The role's password changes in the database; the secret keeps the old one. A new replica logs in with
# the secret's password it got at its start: its pg_basebackup fails, while its pod is Ready
# (enable_readiness_probe is off, the operator's default).
psql_at "$(master)" postgres "alter role standby password 'not-the-secret'" >/dev/null
kubectl patch postgresql "$C" -n "$NS" --type merge -p '{"spec":{"numberOfInstances":3}}' >/dev/null
until_ "a new replica's pg_basebackup fails on the standby password (kubectl logs)" 60 \
  'kubectl logs -n "$NS" "$C-2" | grep -q "password authentication failed for user \"standby\""'
grep -q "failed to bootstrap from leader '$C-0'" <(kubectl logs -n "$NS" "$C-2"); ok $? "...and Patroni logs: failed to bootstrap from leader"
until_ "...its pod is Ready all the same (no readiness probe)" 30 'test "$(ready "$C-2")" = True'
is "...Patroni's status annotation says stopped, and no role label" \
   "$(patroni_state "$C-2") $(kubectl get pod "$C-2" -n "$NS" -o jsonpath='{.metadata.labels.spilo-role}')" "stopped "
until_ "...and the operator says Running after the update" 30 running
! kubectl logs -n "$NS" "$C-2" | grep -qF "$(secret_pw standby)"; ok $? "the pod's log holds no password"
# a replica restarted on its volume starts as a standby, and its walreceiver cannot log in
kubectl delete pod -n "$NS" "$C-1" >/dev/null
until_ "a replica restarted on its own data runs (Patroni: running) ..." 60 'test "$(patroni_state "$C-1")" = running'
sleep 1
is "...but streams no more: nothing streams" "$(streaming)" 0
grep -q 'could not connect to the primary server: .*password authentication failed for user "standby"' \
  "$(cluster_info | jq -r '.members[1].data_dir')/../postgres.log"
ok $? "...its PostgreSQL log says why"

# enable_readiness_probe on: Ready only when the pod's PostgreSQL accepts connections
kubectl patch configmap postgres-operator -n default --type merge -p '{"data":{"enable_readiness_probe":"true"}}' >/dev/null
until_ "with enable_readiness_probe, the replica whose base backup fails is not Ready" 30 'test "$(ready "$C-2")" = False'
is "...the master and the running standby are" "$(ready "$C-0") $(ready "$C-1")" "True True"
# the secret's password put back on the role: the retrying replica comes up, the other streams again
psql_at "$(master)" postgres "alter role standby password '$(secret_pw standby)'" >/dev/null
until_ "with the standby password right again, both replicas stream" 60 'test "$(streaming)" = 2'
until_ "...and are Ready" 30 'test "$(ready "$C-1") $(ready "$C-2")" = "True True"'
kubectl patch configmap postgres-operator -n default --type merge -p '{"data":{"enable_readiness_probe":"false"}}' >/dev/null

# ------------------------------------------------------------------ fail-over
kubectl delete pod -n "$NS" "$C-0" >/dev/null
until_ "deleting the master hands leadership to the in-sync replica ($C-1)" 60 'test "$(master)" = "$C-1"'
is "the promoted replica has the data" "$(psql_at "$C-1" postgres 'select count(*) from t')" 100
until_ "the old master's pod comes back as a streaming replica" 90 'test "$(streaming)" = 2'
is "the master endpoint points at the new leader" \
   "$(kubectl get endpoints "$C" -n "$NS" -o jsonpath='{.subsets[0].addresses[0].ip} {.metadata.annotations.leader}')" \
   "$(pod_ip "$C-1") $C-1"

# ------------------------------------------------------------------ the operator's periodic sync
kubectl delete secret -n "$NS" "app.$C.credentials" >/dev/null
until_ "a deleted secret is re-created by the sync" 30 'kubectl get secret -n "$NS" "app.$C.credentials"'
is "...with the password the operator held" "$(psql_at "$(master)" app 'select 1')" 1
psql_at "$(master)" postgres "alter role app password 'changed-behind-its-back'" >/dev/null
until_ "a role whose password differs from its secret is ALTERed back by the sync" 30 \
  'test "$(psql_at "$(master)" app "select 1")" = 1'
PG_PW=$(secret_pw postgres)
psql_at "$(master)" postgres "alter role postgres password 'not-the-operators'" >/dev/null
until_ "a sync that cannot log in as postgres sets SyncFailed" 30 'test "$(status)" = SyncFailed'
grep -q "$C error while syncing cluster state: could not init db connection" "$SIM/kubesim.log"; ok $? "...and is logged"
PGPASSWORD=not-the-operators PGCONNECT_TIMEOUT=5 "$PGBIN/psql" -X -Atq -h "$(pod_ip "$(master)")" -U postgres -d postgres \
  -c "alter role postgres password '$PG_PW'" >/dev/null
until_ "...and is retried: Running again once postgres has its secret's password" 30 running
is "the sync never ALTERs standby (a system user): it still logs in with its secret" \
   "$(PGPASSWORD=$(secret_pw standby) "$PGBIN/psql" -X -Atq -h "$(pod_ip "$(master)")" -U standby -d postgres -c 'select 1')" 1

# ------------------------------------------------------------------ enable_persistent_volume_claim_deletion=false
kubectl patch configmap postgres-operator -n default --type merge -p '{"data":{"enable_persistent_volume_claim_deletion":"false"}}' >/dev/null
kubectl delete postgresql "$C" -n "$NS" >/dev/null
until_ "the cluster's pods and secrets go" 60 'test -z "$(kubectl get pods,secrets -n "$NS" -l cluster-name=$C -o name)"'
is "the volumes stay" "$(kubectl get pvc -n "$NS" -o name | sort | tr '\n' ' ')" \
   "persistentvolumeclaim/pgdata-$C-0 persistentvolumeclaim/pgdata-$C-1 persistentvolumeclaim/pgdata-$C-2 "
cluster_yaml 1 | kubectl create -f - >/dev/null
until_ "a re-created cluster of the same name starts on the old data" 60 \
  'test "$(PGCONNECT_TIMEOUT=5 "$PGBIN/psql" -X -Atq -h "$(cluster_info | jq -r .socket_dir)" -U postgres -d postgres -c "select count(*) from t")" = 100'
until_ "...where the operator cannot log in with the new secret's password: CreateFailed, then SyncFailed" 60 \
  'grep -q "$NS.$C could not create users: could not init db connection" "$SIM/kubesim.log"'
case $(status) in CreateFailed|SyncFailed) ok 0 "...the status says so";; *) ok 1 "...the status says so: $(status)";; esac

echo "1..$n"
[ "$failed" -eq 0 ]
