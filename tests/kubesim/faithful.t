#!/usr/bin/env bash
# faithful.t — the runbook's own kubectl command lines (Spire, then HSM) run by the real kubectl against
# kubesim, each outcome asserted; Spire's restore is the runbook's own `kubectl cp` + `kubectl exec ... psql`
# (exec over a WebSocket into the pod's real PostgreSQL), HSM's psql straight to the leader's IP. Prints TAP.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
KS=$HERE/kubesim
T=$(mktemp -d /tmp/kubesim-faithful.XXXXXX)
SIM=$T/sim
trap '"$KS" down "$SIM" >/dev/null 2>&1; rm -rf "$T"' EXIT
cd "$T" || exit 1

n=0 failed=0
ok() { n=$((n + 1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=$((failed + 1)); fi; }
# check DESC CMD...: ok when CMD succeeds; its output goes to $T/out for inspection on failure.
check() { local d=$1; shift; if "$@" >"$T/out" 2>&1; then ok 0 "$d"; else ok 1 "$d"; sed 's/^/# /' "$T/out"; fi; }
is() { if [ "$2" = "$3" ]; then ok 0 "$1"; else ok 1 "$1"; echo "#   got: '$2'"; echo "#   expected: '$3'"; fi; }
# The runbook's wait loops say `sleep 2`; we keep the loops verbatim and make sleep short and bounded:
# each loop runs in a subshell that gives up after 400 sleeps (about 80 s).
sleep() { command sleep 0.2; SLEEPS=$((${SLEEPS:-0} + 1)); [ "$SLEEPS" -lt 400 ] || exit 1; }
loop() { local d=$1; shift; if ( SLEEPS=0; "$@" ) >"$T/out" 2>&1; then ok 0 "$d"; else ok 1 "$d"; sed 's/^/# /' "$T/out"; fi; }

if ! "$KS" up "$SIM" --fixture csm >"$T/up.log" 2>&1; then
    echo "1..1"; echo "not ok 1 - kubesim up"; sed 's/^/# /' "$T/up.log"; exit 1
fi
ok 0 "kubesim up --fixture csm"
export KUBECONFIG=$SIM/kubeconfig

secret_pw() { kubectl get secret "$1" -n "$2" -ojsonpath='{.data.password}' | base64 -d; }
master_ip() { kubectl get pods -n "$2" -l "application=spilo,cluster-name=$1,spilo-role=master" -o jsonpath='{.items[0].status.podIP}'; }
# sql CLUSTER NS USER DB SQL: psql over TCP to the master pod IP with the password in the user's secret.
sql() {
    local secret=${3//_/-}.$1.credentials
    PGPASSWORD=$(secret_pw "$secret" "$2") PGCONNECT_TIMEOUT=5 psql -X -A -t -q -h "$(master_ip "$1" "$2")" -U "$3" -d "$4" -c "$5"
}

# ------------------------------------------------------------------ Spilo's connection rules
# A client on a node reaching a pod IP must use TLS (hostnossl ... reject); libpq's default prefer does.
PG_PW=$(secret_pw postgres.spire-postgres.credentials spire)
out=$(PGPASSWORD=$PG_PW PGSSLMODE=disable PGCONNECT_TIMEOUT=5 psql -X -Atq -h "$(master_ip spire-postgres spire)" -U postgres -d postgres -c 'select 1' 2>&1)
case $out in *"pg_hba.conf rejects connection"*"no encryption"*) ok 0 "a connection to a pod without TLS is refused (hostnossl reject)";;
    *) ok 1 "a connection to a pod without TLS is refused (hostnossl reject)"; echo "# $out";; esac
out=$(PGPASSWORD=$PG_PW PGSSLMODE=disable PGCONNECT_TIMEOUT=5 psql -X "host=$(master_ip spire-postgres spire) user=standby replication=true" -c 'IDENTIFY_SYSTEM' 2>&1)
case $out in *"no pg_hba.conf entry for replication connection"*"no encryption"*) ok 0 "a replication connection without TLS is refused";;
    *) ok 1 "a replication connection without TLS is refused"; echo "# $out";; esac
is "libpq's default sslmode (prefer) gets TLS, and the cluster stores scram-sha-256 verifiers (PostgreSQL 14+)" \
   "$(PGPASSWORD=$PG_PW PGCONNECT_TIMEOUT=5 psql -X -Atq -h "$(master_ip spire-postgres spire)" -U postgres -d postgres -F ' ' \
      -c "select s.ssl, current_setting('password_encryption'), left(a.rolpassword, 13) from pg_stat_ssl s, pg_authid a where s.pid = pg_backend_pid() and a.rolname = 'spire'")" \
   "t scram-sha-256 SCRAM-SHA-256"
is "the pod serves Spilo's self-signed certificate" \
   "$(echo | timeout 10 openssl s_client -starttls postgres -connect "$(master_ip spire-postgres spire):5432" 2>/dev/null |
      openssl x509 -noout -subject -issuer | tr '\n' ' ')" "subject=CN = spilo.example.org issuer=CN = spilo.example.org "

# ------------------------------------------------------------------ API basics seen through kubectl
is "kubectl get ns lists the CSM namespaces" "$(kubectl get ns -o jsonpath='{.items[*].metadata.name}')" \
   "default kube-public kube-system services spire"
out=$(kubectl --token=wrong get pods -n spire 2>&1)
case $out in *Unauthorized*) ok 0 "a wrong bearer token gets 401 Unauthorized";; *) ok 1 "a wrong bearer token gets 401 Unauthorized"; echo "# $out";; esac
is "auth can-i delete postgresql (allowed)" "$(kubectl auth can-i delete postgresql -n spire)" "yes"
"$KS" admin "$SIM" '{"op":"deny","verb":"delete","resource":"postgresqls","namespace":"spire"}' >/dev/null
is "auth can-i answers from the deny table" "$(kubectl auth can-i delete postgresql -n spire 2>/dev/null)" "no"
out=$(kubectl delete postgresql spire-postgres -n spire 2>&1)
case $out in *Forbidden*|*forbidden*) ok 0 "a denied verb is refused with 403 Forbidden";; *) ok 1 "a denied verb is refused with 403 Forbidden"; echo "# $out";; esac
"$KS" admin "$SIM" '{"op":"allow_all"}' >/dev/null
"$KS" fault "$SIM" --path '/namespaces/spire/pods' --code 503 --count 2 --retry-after 0 >/dev/null
check "kubectl retries through two injected 503s with Retry-After" kubectl get pods -n spire
is "rollout status on the operator's OnDelete statefulset fails as on a real cluster" \
   "$(kubectl rollout status statefulset spire-postgres -n spire 2>&1)" \
   "error: rollout status is only available for RollingUpdate strategy type"

# ------------------------------------------------------------------ Spire
"$KS" backup "$SIM" spire-postgres "$T" >"$T/backup.out" 2>&1
DUMPFILE_SRC=$(sed -n 1p "$T/backup.out"); MANIFEST=$(basename "$(sed -n 2p "$T/backup.out")")
is "backup writes <cluster>-<timestamp>.psql and .manifest" \
   "$(basename "$DUMPFILE_SRC" | sed -E 's/[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}/TS/')" "spire-postgres-TS.psql"
# the runbook renames the download (no ':' for kubectl cp) and works in the directory holding it
DUMPFILE=$(basename "${DUMPFILE_SRC//:/-}"); cp "$DUMPFILE_SRC" "$DUMPFILE"
OLD_SPIRE_PW=$(secret_pw spire.spire-postgres.credentials spire)

CLIENT=spire-server
NAMESPACE=spire
POSTGRESQL=spire-postgres

check "scale statefulset spire-server to 0" kubectl scale statefulset "${CLIENT}" -n "${NAMESPACE}" --replicas=0
loop "spire-server pods gone (runbook loop)" eval 'while kubectl get pods -n "${NAMESPACE}" -l "app.kubernetes.io/name=${CLIENT}" | grep -qv NAME ; do
                echo "  waiting for pods to terminate"; sleep 2
            done'
is "statefulset status.replicas is 0" "$(kubectl get sts "$CLIENT" -n "$NAMESPACE" -o jsonpath='{.status.replicas}')" "0"

kubectl get postgresql "${POSTGRESQL}" -n "${NAMESPACE}" -o json | jq 'del(.spec.selector)' |
                jq 'del(.spec.template.metadata.labels."controller-uid")' | jq 'del(.status)' > postgres-cr.json
is "get postgresql -o json | jq saves the CR" "$(jq -r '.kind + " " + .metadata.name + " " + (.spec.numberOfInstances|tostring)' postgres-cr.json)" \
   "postgresql spire-postgres 3"
check "delete -f postgres-cr.json" kubectl delete -f postgres-cr.json
loop "spilo pods terminate (runbook loop)" eval 'while kubectl get pods -l "application=spilo,cluster-name=${POSTGRESQL}" -n "${NAMESPACE}" | grep -qv NAME ; do
                echo "  waiting for pods to terminate"; sleep 2
            done'
loop "the operator removes secrets, PVCs and the statefulset" eval 'until [ -z "$(kubectl get secret,pvc,sts -n spire -l cluster-name=spire-postgres -o name; kubectl get sts spire-postgres -n spire -o name 2>/dev/null)" ]; do sleep 2; done'

cp postgres-cr.json postgres-orig-cr.json
jq '.spec.numberOfInstances = 1' postgres-orig-cr.json > postgres-cr.json
check "create -f postgres-cr.json (one instance)" kubectl create -f postgres-cr.json
loop "the new spilo pod appears (runbook loop)" eval 'while ! kubectl get pods -l "application=spilo,cluster-name=${POSTGRESQL}" -n "${NAMESPACE}" | grep -qv NAME ; do
                echo "  waiting for pod to start"; sleep 2
            done'
loop "PostgresClusterStatus becomes Running (runbook loop)" eval 'while [ $(kubectl get postgresql "${POSTGRESQL}" -n "${NAMESPACE}" -o json | jq -r ".status.PostgresClusterStatus") != "Running" ]
            do
                echo "  waiting for postgresql to start running"; sleep 2
            done'
is "one pod in the re-created cluster" "$(kubectl get pods -l "application=spilo,cluster-name=${POSTGRESQL}" -n "${NAMESPACE}" -o name)" "pod/spire-postgres-0"
NEW_SPIRE_PW=$(secret_pw spire.spire-postgres.credentials spire)
if [ -n "$NEW_SPIRE_PW" ] && [ "$NEW_SPIRE_PW" != "$OLD_SPIRE_PW" ]; then ok 0 "re-created cluster has new secrets with new passwords"; else ok 1 "re-created cluster has new secrets with new passwords"; fi
is "re-created cluster starts empty" "$(sql spire-postgres spire postgres spire "select count(*) from pg_tables where schemaname='public'")" "0"

# Over TCP, psql as postgres with the new cluster's password: the dump's own ALTER ROLE postgres ... PASSWORD
# (the backed-up one) lands before its first \connect, which psql makes with the password it started with,
# so the stream breaks there; what any TCP restore (pgr's) has to handle.
PGPASSWORD=$(secret_pw postgres.spire-postgres.credentials spire) psql -X -h "$(master_ip spire-postgres spire)" -U postgres -d postgres \
    <"$DUMPFILE" >"$T/restore.out" 2>&1
grep -q 'password authentication failed for user "postgres"' "$T/restore.out"
ok $? "TCP restore with the new cluster's password breaks at the dump's first \\connect"
# The runbook's restore, its two lines verbatim: copy the dump into the pod, then psql inside the pod over its
# local socket (trusted, so the password changes nothing), with the dump on kubectl's stdin.
check "kubectl cp the dump into the pod (runbook line)" \
    kubectl cp "./${DUMPFILE}" "${POSTGRESQL}-0:/home/postgres/${DUMPFILE}" -c postgres -n "${NAMESPACE}"
is "the copy in the pod equals the dump (kubectl exec ... sha256sum)" \
   "$(kubectl exec "${POSTGRESQL}-0" -c postgres -n "${NAMESPACE}" -- sha256sum "/home/postgres/${DUMPFILE}" | cut -c1-64)" \
   "$(sha256sum "$DUMPFILE" | cut -c1-64)"
kubectl exec "${POSTGRESQL}-0" -c postgres -n "${NAMESPACE}" -it -- psql -U postgres < "${DUMPFILE}" >"$T/restore.out" 2>&1
ok $? "restore with kubectl exec -it ... -- psql -U postgres < \$DUMPFILE (runbook line)"
grep -q 'role "postgres" already exists' "$T/restore.out"; ok $? "restore reports the expected 'already exists' errors"
grep -q 'FATAL\|not connected' "$T/restore.out"; is "the exec'd restore ran to the end" "$?" "1"
is "the exec'd restore ran inside the pod, as postgres over the local socket" \
   "$(kubectl exec "${POSTGRESQL}-0" -c postgres -n "${NAMESPACE}" -- psql -U postgres -d spire -Atc 'select current_user, count(*) from selectors group by 1')" \
   "postgres|400"
out=$(kubectl exec "${POSTGRESQL}-0" -c postgres -n "${NAMESPACE}" -- psql -d spire -c 'select 1' 2>&1)
case $out in *'role "root" does not exist'*"exit code 2"*) ok 0 "exec runs as root, as in a Spilo pod: psql without -U fails";;
    *) ok 1 "exec runs as root, as in a Spilo pod: psql without -U fails"; echo "# $out";; esac

check "delete the four spire-postgres secrets" kubectl delete secret postgres.spire-postgres.credentials service-account.spire-postgres.credentials \
                    spire.spire-postgres.credentials standby.spire-postgres.credentials -n "${NAMESPACE}"
check "apply -f the backup manifest" kubectl apply -f "${MANIFEST}"
is "secrets hold the backed-up password again (get secret -ojsonpath | base64 -d)" "$(secret_pw spire.spire-postgres.credentials spire)" "$OLD_SPIRE_PW"
for secret in postgres.spire-postgres.credentials service-account.spire-postgres.credentials \
                        spire.spire-postgres.credentials standby.spire-postgres.credentials
do
    echo -n "secret ${secret} username & password: "
    echo -n "`kubectl get secret "${secret}" -n "${NAMESPACE}" -ojsonpath='{.data.username}' | base64 -d` "
    echo `kubectl get secret "${secret}" -n "${NAMESPACE}" -ojsonpath='{.data.password}'| base64 -d`
done >"$T/secrets.out"
is "the runbook's secret loop prints the four users" "$(awk '{print $6}' "$T/secrets.out" | tr '\n' ' ')" "postgres service_account spire standby "

check "delete pod spire-postgres-0" kubectl delete pod -n "${NAMESPACE}" "${POSTGRESQL}-0"
loop "the spilo pod is back (runbook loop)" eval 'while ! kubectl get pods -l "application=spilo,cluster-name=${POSTGRESQL}" -n "${NAMESPACE}" | grep -qv NAME ; do
                echo "  waiting for postgresql pod to start"; sleep 2
            done'
check "patch postgresql --type=json numberOfInstances 3" kubectl patch postgresql "${POSTGRESQL}" -n "${NAMESPACE}" --type='json' \
                -p='[{"op" : "replace", "path":"/spec/numberOfInstances", "value" : 3}]'
loop "PostgresClusterStatus Running after the patch (runbook loop)" eval 'while [ $(kubectl get postgresql "${POSTGRESQL}" -n "${NAMESPACE}" -o json | jq -r ".status.PostgresClusterStatus") != "Running" ]
            do
                echo "  waiting for postgresql to start running"; sleep 2
            done'
check "wait for 3 ready spilo pods" kubectl wait pod -l "application=spilo,cluster-name=${POSTGRESQL}" -n "${NAMESPACE}" --for=condition=Ready --timeout=60s
loop "three spilo pods" eval 'until [ "$(kubectl get pods -l application=spilo,cluster-name=spire-postgres -n spire -o name | wc -l)" = 3 ]; do sleep 2; done'
# Ready says little (no readiness probe): the replicas were made by pg_basebackup as standby with the
# secret's password (the manifest's, which the dump gave the role) and stream from the master
loop "both new replicas stream from the master (pg_stat_replication)" eval 'until [ "$(sql spire-postgres spire postgres postgres "select count(*) from pg_stat_replication where state = '"'streaming'"'")" = 2 ]; do sleep 2; done'
check "scale statefulset spire-server to 3" kubectl scale statefulset "${CLIENT}" -n "${NAMESPACE}" --replicas=3
loop "three spire-server pods (runbook loop)" eval 'while [ $(kubectl get pods -n "${NAMESPACE}" -l "app.kubernetes.io/name=${CLIENT}" | grep -cv NAME) != 3 ]
            do
                echo "  waiting for pods to start"; sleep 2
            done'
check "rollout restart + status daemonset spire-agent" eval 'kubectl rollout restart daemonset spire-agent -n "${NAMESPACE}" &&
                kubectl rollout status daemonset spire-agent -n "${NAMESPACE}"'
check "rollout restart + status deployment spire-jwks" eval 'kubectl rollout restart deployment spire-jwks -n "${NAMESPACE}" &&
                kubectl rollout status deployment spire-jwks -n "${NAMESPACE}"'
is "restored data is back, owned by spire" "$(sql spire-postgres spire spire spire "select count(*) || ' ' || pg_catalog.pg_get_userbyid(c.relowner) from registered_entries, pg_class c where c.relname = 'registered_entries' group by c.relowner")" "400 spire"
out=$(PGPASSWORD=not-the-password PGCONNECT_TIMEOUT=5 psql -X -h "$(master_ip spire-postgres spire)" -U spire -d spire -c 'select 1' 2>&1)
case $out in *"password authentication failed"*) ok 0 "a wrong password fails for real";; *) ok 1 "a wrong password fails for real"; echo "# $out";; esac

# ------------------------------------------------------------------ HSM
"$KS" backup "$SIM" cray-smd-postgres "$T" >"$T/backup.out" 2>&1
DUMPFILE=$(sed -n 1p "$T/backup.out")
# The HSM page's hand-made manifest: `kubectl get secret -o yaml A B ...` (a `kind: List`) with uid,
# resourceVersion and creationTimestamp stripped; kubectl apply -f of a List fetches /openapi/v2.
MANIFEST=$T/cray-smd-postgres.list.manifest
kubectl get secret -n services postgres.cray-smd-postgres.credentials service-account.cray-smd-postgres.credentials \
    hmsdsuser.cray-smd-postgres.credentials standby.cray-smd-postgres.credentials -o yaml |
    grep -v -e '^    uid:' -e 'resourceVersion:' -e '^    creationTimestamp:' >"$MANIFEST"
is "the hand-made HSM manifest is a kind: List of 4 secrets" \
   "$(grep -c '^  kind: Secret$' "$MANIFEST") $(grep '^kind:' "$MANIFEST")" "4 kind: List"
OLD_HMS_PW=$(secret_pw hmsdsuser.cray-smd-postgres.credentials services)
NAMESPACE=services
POSTGRESQL=cray-smd-postgres

check "scale deployment cray-smd to 0" kubectl scale deployment cray-smd -n "${NAMESPACE}" --replicas=0
loop "cray-smd pods gone" eval 'while kubectl get pods -n services -l app.kubernetes.io/name=cray-smd | grep -qv NAME ; do sleep 2; done'

kubectl get job -n services cray-smd-init -o json > cray-smd-init.json
# The HSM procedure's line strips only the legacy controller-uid label: a 1.27+ API server rejects the re-post.
out=$(cat cray-smd-init.json | jq 'del(.spec.selector)' | jq 'del(.spec.template.metadata.labels."controller-uid")' | kubectl replace --force -f - 2>&1)
case $out in *'is invalid'*batch.kubernetes.io/controller-uid*) ok 0 "replace --force of the job with a stale batch.kubernetes.io/controller-uid label is rejected";;
    *) ok 1 "replace --force of the job with a stale batch.kubernetes.io/controller-uid label is rejected"; echo "# $out";; esac
out=$(kubectl get job cray-smd-init -n services 2>&1)
case $out in *NotFound*|*"not found"*) ok 0 "...and, as on a real cluster, the job is gone (deleted before the failed create)";;
    *) ok 1 "...and the job is gone"; echo "# $out";; esac
check "replace --force with selector and both controller-uid labels stripped" eval 'cat cray-smd-init.json | jq "del(.spec.selector)" |
    jq "del(.spec.template.metadata.labels.\"controller-uid\")" | jq "del(.spec.template.metadata.labels.\"batch.kubernetes.io/controller-uid\")" |
    jq "del(.metadata.uid)" | jq "del(.metadata.resourceVersion)" | jq "del(.status)" | kubectl replace --force -f -'
check "wait --for=condition=complete job/cray-smd-init" kubectl wait --for=condition=complete --timeout=300s job/cray-smd-init -n services
is "the re-run job succeeded once" "$(kubectl get job cray-smd-init -n services -o jsonpath='{.status.succeeded} {.spec.selector.matchLabels}')" \
   "1 {\"batch.kubernetes.io/controller-uid\":\"$(kubectl get job cray-smd-init -n services -o jsonpath='{.metadata.uid}')\"}"

LEADER=$(kubectl get pods -n services -l "application=spilo,cluster-name=${POSTGRESQL},spilo-role=master" -o jsonpath='{.items[0].metadata.name}')
is "the leader carries spilo-role=master" "$LEADER" "cray-smd-postgres-0"
DUMP_SCHEMA=$(awk '/^COPY public.system \(id, schema_version, dirty\) FROM stdin;/{getline; split($0, a, "\t"); print a[2]; exit}' "$DUMPFILE")
is "schema check: hmsds system.schema_version matches the dump" "$(sql cray-smd-postgres services hmsdsuser hmsds 'SELECT schema_version FROM system')" "$DUMP_SCHEMA"

kubectl get postgresql "${POSTGRESQL}" -n "${NAMESPACE}" -o json | jq 'del(.spec.selector)' |
                jq 'del(.spec.template.metadata.labels."controller-uid")' | jq 'del(.status)' > postgres-cr.json
check "delete -f the HSM postgresql" kubectl delete -f postgres-cr.json
loop "HSM spilo pods terminate" eval 'while kubectl get pods -l "application=spilo,cluster-name=${POSTGRESQL}" -n "${NAMESPACE}" | grep -qv NAME ; do sleep 2; done'
loop "the operator has removed the HSM secrets" eval 'until [ -z "$(kubectl get secret -n services -o name | grep cray-smd-postgres)" ]; do sleep 2; done'
# Secrets first: the operator adopts existing credentials secrets, so the new cluster's passwords are the
# backed-up ones and the dump's ALTER ROLE statements change nothing under the restoring session.
check "apply -f the HSM manifest (kind: List) before re-creating the cluster" kubectl apply -f "$MANIFEST"
check "create -f the HSM postgresql (3 instances)" kubectl create -f postgres-cr.json
check "wait for PostgresClusterStatus Running (kubectl wait --for=jsonpath)" kubectl wait postgresql "${POSTGRESQL}" -n "${NAMESPACE}" --for=jsonpath='{.status.PostgresClusterStatus}'=Running --timeout=120s
is "three spilo pods" "$(kubectl get pods -l "application=spilo,cluster-name=${POSTGRESQL}" -n "${NAMESPACE}" -o name | wc -l)" "3"
is "the operator kept the applied secret's password" "$(secret_pw hmsdsuser.cray-smd-postgres.credentials services)" "$OLD_HMS_PW"
PGPASSWORD=$(secret_pw postgres.cray-smd-postgres.credentials services) psql -X -h "$(master_ip cray-smd-postgres services)" -U postgres -d postgres \
    <"$DUMPFILE" >"$T/restore.out" 2>&1
ok $? "stream the HSM dump into the leader over TCP"
grep -q 'FATAL\|not connected' "$T/restore.out"; is "the HSM restore ran to the end" "$?" "1"
check "DELETE FROM comp_eth_interfaces" sql cray-smd-postgres services postgres hmsds 'DELETE FROM comp_eth_interfaces'
check "delete the four HSM secrets" kubectl delete secret postgres.cray-smd-postgres.credentials service-account.cray-smd-postgres.credentials \
    hmsdsuser.cray-smd-postgres.credentials standby.cray-smd-postgres.credentials -n services
check "apply -f the HSM manifest (kind: List)" kubectl apply -f "$MANIFEST"
check "delete all three postgres pods" kubectl delete pod -n services cray-smd-postgres-0 cray-smd-postgres-1 cray-smd-postgres-2
loop "spilo pods back and Ready" eval 'until [ "$(kubectl get pods -l application=spilo,cluster-name=cray-smd-postgres -n services -o jsonpath="{range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\"\n\"}{end}" | grep -c True)" = 3 ]; do sleep 2; done'
check "PostgresClusterStatus Running" kubectl wait postgresql "${POSTGRESQL}" -n services --for=jsonpath='{.status.PostgresClusterStatus}'=Running --timeout=60s
check "scale deployment cray-smd to 3" kubectl scale deployment cray-smd -n services --replicas=3
check "rollout status deployment cray-smd" kubectl rollout status deployment cray-smd -n services --timeout=60s
is "hmsdsuser logs in with the backed-up password; components restored" \
   "$(PGPASSWORD=$OLD_HMS_PW psql -X -A -t -h "$(master_ip cray-smd-postgres services)" -U hmsdsuser -d hmsds -c "select count(*) from components where type='Node'")" "240"
is "comp_eth_interfaces emptied for rediscovery" "$(sql cray-smd-postgres services hmsdsuser hmsds 'select count(*) from comp_eth_interfaces')" "0"

# ------------------------------------------------------------------ Keycloak's job re-runs and proxy restarts
NAMESPACE=services
is "keycloak pods show both containers ready" "$(kubectl get pods -n "${NAMESPACE}" -l app.kubernetes.io/instance=cray-keycloak | awk 'NR>1{print $2}' | sort -u)" "2/2"
kubectl get job -n "${NAMESPACE}" -l app.kubernetes.io/instance=cray-keycloak -o json > keycloak-setup.json
check "replace --force the keycloak-setup job (runbook line, all template labels dropped)" eval 'cat keycloak-setup.json | jq ".items[0]" | jq "del(.metadata.creationTimestamp)" |
                    jq "del(.metadata.managedFields)" | jq "del(.metadata.resourceVersion)" |
                    jq "del(.metadata.selfLink)" | jq "del(.metadata.uid)" | jq "del(.spec.selector)" |
                    jq "del(.spec.template.metadata.labels)" | jq "del(.status)" | kubectl replace --force -f -'
loop "keycloak-setup COMPLETIONS reaches 1/1" eval 'until kubectl get jobs -n "${NAMESPACE}" -l app.kubernetes.io/instance=cray-keycloak | grep -q "keycloak-setup .*1/1"; do sleep 2; done'
check "rollout restart the three oauth2-proxies" eval 'kubectl rollout restart -n "${NAMESPACE}" deployment/cray-oauth2-proxies-customer-access-ingress &&
                kubectl rollout restart -n "${NAMESPACE}" deployment/cray-oauth2-proxies-customer-high-speed-ingress &&
                kubectl rollout restart -n "${NAMESPACE}" deployment/cray-oauth2-proxies-customer-management-ingress'
check "rollout status of the three oauth2-proxies" eval 'kubectl rollout status -n "${NAMESPACE}" deployment/cray-oauth2-proxies-customer-access-ingress &&
                kubectl rollout status -n "${NAMESPACE}" deployment/cray-oauth2-proxies-customer-high-speed-ingress &&
                kubectl rollout status -n "${NAMESPACE}" deployment/cray-oauth2-proxies-customer-management-ingress'

echo "1..$n"
[ "$failed" = 0 ]
