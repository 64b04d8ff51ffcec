-- pgr.spilo — the names the Zalando operator and Spilo give a cluster's objects, written once.
--   spilo.selector(cluster [, role])     "application=spilo,cluster-name=C[,spilo-role=ROLE]"
--                                        (the label selector of a cluster's pods; role "master"/"replica")
--   spilo.secret_name(cluster, user)     "service-account.spire-postgres.credentials"
--                                        (the operator's secret of a role: "_" in its name become "-")
local M = {}

function M.selector(cluster, role)
  assert(type(cluster) == "string" and cluster ~= "", "spilo.selector: a cluster name")
  local s = "application=spilo,cluster-name=" .. cluster
  if role then s = s .. ",spilo-role=" .. role end
  return s
end

function M.secret_name(cluster, user)
  assert(type(cluster) == "string" and type(user) == "string", "spilo.secret_name(cluster, user)")
  return ("%s.%s.credentials"):format((user:gsub("_", "-")), cluster)
end

return M
