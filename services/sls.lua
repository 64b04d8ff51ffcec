-- services/sls.lua: "Restore SLS Postgres Database from Backup" (CSM) — in place: cray-sls-postgres is
-- NOT deleted; the sls and service_db databases are dropped and restored, then the grants and secrets.
local restore = require "pgr.restore"

local DATABASES = { "sls", "service_db" }

return restore.procedure {
  service = "sls", title = "Restore SLS Postgres (in place)",
  namespace = "services", cluster = "cray-sls-postgres",
  client = { kind = "deployment", name = "cray-sls", selector = "app.kubernetes.io/name=cray-sls" },
  users = { "postgres", "service_account", "slsuser", "standby" },
  recreate = false, restart = "all",
  dependants = { { "job", "cray-sls-init-load" } },
  verbs = { { "get", "jobs" }, { "delete", "jobs" }, { "create", "jobs" } },
  hooks = {
    preflight = {
      { "Check the backup's SLS schema version equals the deployed one",
        function(ctx) return restore.schema_check(ctx, { database = "sls", user = "slsuser",
          table = "public.schema_migrations", column = "version", query = "SELECT version FROM schema_migrations" }) end,
        touches = "reads: sls.schema_migrations; the dump's COPY public.schema_migrations" },
    },
    before_restore = {
      { "Re-run the cray-sls-init-load job and wait for it to complete",
        function(ctx) return restore.rerun_job(ctx, "cray-sls-init-load") end,
        touches = "replaces: job cray-sls-init-load (replace --force)" },
      { "Revoke connections, end the sessions and drop the sls and service_db databases",
        function(ctx) return restore.drop_databases(ctx, DATABASES) end,
        destructive = true, touches = "drops: databases sls and service_db of cray-sls-postgres" },
    },
    after_restore = {
      { "Grant connect on sls and service_db again",
        function(ctx)
          for _, db in ipairs(DATABASES) do
            local ok, err = restore.sql(ctx, "postgres", ("GRANT CONNECT ON DATABASE %s TO public"):format(db))
            if not ok then return nil, err end
          end
          return true
        end, touches = "changes: grants on sls and service_db" },
    },
    after = {
      { "Verify SLS answers", restore.site_step("sls_verify"), touches = "runs: commands.sls_verify" },
    },
  },
}
