-- services/hsm.lua: "Restore HSM Postgres from Backup" (CSM) — cray-smd-postgres, with HSM's schema
-- check, its loader job, the stale Ethernet interfaces removed, all database pods restarted.
local restore = require "pgr.restore"

return restore.procedure {
  service = "hsm", title = "Restore HSM (cray-smd) Postgres",
  namespace = "services", cluster = "cray-smd-postgres",
  client = { kind = "deployment", name = "cray-smd", selector = "app.kubernetes.io/name=cray-smd" },
  users = { "postgres", "service_account", "hmsdsuser", "standby" },
  restart = "all",
  dependants = { { "job", "cray-smd-init" } },
  verbs = { { "get", "jobs" }, { "delete", "jobs" }, { "create", "jobs" } },
  hooks = {
    preflight = {
      { "Check the backup's HSM schema version equals the deployed one",
        function(ctx) return restore.schema_check(ctx, { database = "hmsds", user = "hmsdsuser",
          table = "public.system", column = "schema_version", query = "SELECT schema_version FROM system" }) end,
        touches = "reads: hmsds.system; the dump's COPY public.system" },
    },
    before_restore = {
      { "Re-run the cray-smd-init job and wait for it to complete",
        function(ctx) return restore.rerun_job(ctx, "cray-smd-init") end,
        touches = "replaces: job cray-smd-init (replace --force)" },
    },
    after_restore = {
      { "Delete the Ethernet interfaces (rediscovery repopulates them)",
        function(ctx) return restore.sql(ctx, "hmsds", "DELETE FROM comp_eth_interfaces") end,
        destructive = true, touches = "deletes: every row of hmsds.comp_eth_interfaces" },
    },
    after = {
      { "Verify HSM is ready", restore.site_step("hsm_verify"), touches = "runs: commands.hsm_verify" },
      { "Rediscover the Redfish endpoints", restore.site_step("hsm_rediscover"), touches = "runs: commands.hsm_rediscover" },
    },
  },
}
