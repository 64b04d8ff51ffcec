-- services/keycloak.lua: "Restore Postgres for Keycloak" (CSM) — the common restore of keycloak-postgres,
-- then Keycloak's own steps: every container ready, the setup jobs re-run, the oauth2-proxies, a token.
local restore = require "pgr.restore"

local PROXIES = { "cray-oauth2-proxies-customer-access-ingress", "cray-oauth2-proxies-customer-high-speed-ingress",
                  "cray-oauth2-proxies-customer-management-ingress" }

return restore.procedure {
  service = "keycloak", title = "Restore Postgres for Keycloak",
  namespace = "services", cluster = "keycloak-postgres",
  client = { kind = "statefulset", name = "cray-keycloak", selector = "app.kubernetes.io/instance=cray-keycloak" },
  users = { "postgres", "service_account", "standby" },
  dependants = { { "job", "keycloak-setup" }, { "job", "keycloak-users-localize" }, { "deployment", PROXIES[1] },
                 { "deployment", PROXIES[2] }, { "deployment", PROXIES[3] } },
  verbs = { { "get", "jobs" }, { "delete", "jobs" }, { "create", "jobs" }, { "patch", "deployments" } },
  hooks = { after = {
    { "Wait until every container of every cray-keycloak pod is ready",
      function(ctx) return restore.containers_ready(ctx, "app.kubernetes.io/instance=cray-keycloak") end,
      touches = "reads: pods app.kubernetes.io/instance=cray-keycloak" },
    { "Re-run the keycloak-setup job and wait for it to complete",
      function(ctx) return restore.rerun_job(ctx, "keycloak-setup") end,
      touches = "replaces: job keycloak-setup (replace --force)" },
    { "Re-run the keycloak-users-localize job and wait for it to complete",
      function(ctx) return restore.rerun_job(ctx, "keycloak-users-localize") end,
      touches = "replaces: job keycloak-users-localize (replace --force)" },
    { "Restart the three oauth2-proxies deployments and wait for their rollouts",
      function(ctx)
        local list = {}
        for i, name in ipairs(PROXIES) do list[i] = { "deployment", name } end
        return restore.restart_rollouts(ctx, list)
      end, touches = "changes: deployments cray-oauth2-proxies-* (rollout restart)" },
    { "Verify a token can be obtained from Keycloak",
      function(ctx) return restore.keycloak_token(ctx) end,
      touches = "reads: the site's keycloak.token_url (credentials asked, or from keycloak.credentials_file)" },
  } },
}
