# bench/lib/spire-runbook.sh — the seed runbook's Spire restore (manifest path) as the bash an operator
# runs: kubectl, jq, its `sleep 2` wait loops verbatim. Only two lines differ: the dump goes to psql on
# the pod's server socket (what `kubectl cp` + `kubectl exec ... psql` does; kubesim has no exec), and
# pdsh reaches the simulated NCNs through the sandbox's ssh_config.
# Needs: KUBECONFIG, DUMPFILE, MANIFEST, SOCKDIR_CMD (prints the master's socket dir), NODES_SSH_CONFIG,
# NODELIST, FIX_CMD, JWT_CMD.
set -u
CLIENT=spire-server
NAMESPACE=spire
POSTGRESQL=spire-postgres

kubectl scale statefulset "${CLIENT}" -n "${NAMESPACE}" --replicas=0
while kubectl get pods -n "${NAMESPACE}" -l "app.kubernetes.io/name=${CLIENT}" | grep -qv NAME ; do
    echo "  waiting for pods to terminate"; sleep 2
done
kubectl get postgresql "${POSTGRESQL}" -n "${NAMESPACE}" -o json | jq 'del(.spec.selector)' |
    jq 'del(.spec.template.metadata.labels."controller-uid")' | jq 'del(.status)' > postgres-cr.json
kubectl delete -f postgres-cr.json
while kubectl get pods -l "application=spilo,cluster-name=${POSTGRESQL}" -n "${NAMESPACE}" | grep -qv NAME ; do
    echo "  waiting for pods to terminate"; sleep 2
done
cp postgres-cr.json postgres-orig-cr.json
jq '.spec.numberOfInstances = 1' postgres-orig-cr.json > postgres-cr.json
kubectl create -f postgres-cr.json
while ! kubectl get pods -l "application=spilo,cluster-name=${POSTGRESQL}" -n "${NAMESPACE}" | grep -qv NAME ; do
    echo "  waiting for pod to start"; sleep 2
done
while [ $(kubectl get postgresql "${POSTGRESQL}" -n "${NAMESPACE}" -o json | jq -r '.status.PostgresClusterStatus') != "Running" ]
do
    echo "  waiting for postgresql to start running"; sleep 2
done
# kubectl cp + kubectl exec "${POSTGRESQL}-0" -c postgres -- psql -U postgres < "${DUMPFILE}"
psql -h "$($SOCKDIR_CMD)" -U postgres < "${DUMPFILE}" > restore.log 2>&1
kubectl delete secret postgres.spire-postgres.credentials service-account.spire-postgres.credentials \
    spire.spire-postgres.credentials standby.spire-postgres.credentials -n "${NAMESPACE}"
kubectl apply -f "${MANIFEST}"
kubectl delete pod -n "${NAMESPACE}" "${POSTGRESQL}-0"
while ! kubectl get pods -l "application=spilo,cluster-name=${POSTGRESQL}" -n "${NAMESPACE}" | grep -qv NAME ; do
    echo "  waiting for postgresql pod to start"; sleep 2
done
kubectl patch postgresql "${POSTGRESQL}" -n "${NAMESPACE}" --type='json' \
    -p='[{"op" : "replace", "path":"/spec/numberOfInstances", "value" : 3}]'
while [ $(kubectl get postgresql "${POSTGRESQL}" -n "${NAMESPACE}" -o json | jq -r '.status.PostgresClusterStatus') != "Running" ]
do
    echo "  waiting for postgresql to start running"; sleep 2
done
kubectl scale statefulset "${CLIENT}" -n "${NAMESPACE}" --replicas=3
while [ $(kubectl get pods -n "${NAMESPACE}" -l "app.kubernetes.io/name=${CLIENT}" | grep -cv NAME) != 3 ]
do
    echo "  waiting for pods to start"; sleep 2
done
kubectl rollout restart daemonset spire-agent -n "${NAMESPACE}" &&
    kubectl rollout status daemonset spire-agent -n "${NAMESPACE}"
kubectl rollout restart deployment spire-jwks -n "${NAMESPACE}" &&
    kubectl rollout status deployment spire-jwks -n "${NAMESPACE}"
PDSH_RCMD_TYPE=ssh PDSH_SSH_ARGS_APPEND="-F ${NODES_SSH_CONFIG}" pdsh -S -w "${NODELIST}" 'systemctl restart spire-agent' && echo "No errors"
$FIX_CMD
$JWT_CMD
