-- services/spire.lua: "Restore Postgres for Spire" (CSM) — the common restore of spire-postgres,
-- then Spire's own steps: restart the agents and jwks, restart spire-agent on every NCN, fix, verify.
local restore = require "pgr.restore"

return restore.procedure {
  service = "spire", title = "Restore Postgres for Spire",
  namespace = "spire", cluster = "spire-postgres",
  client = { kind = "statefulset", name = "spire-server", selector = "app.kubernetes.io/name=spire-server" },
  users = { "postgres", "service_account", "spire", "standby" },
  verbs = { { "patch", "daemonsets" }, { "patch", "deployments" } },
  hooks = { after = {
    { "Restart the spire-agent daemonset and the spire-jwks deployment and wait for their rollouts",
      function(ctx)
        return restore.restart_rollouts(ctx, { { "daemonset", "spire-agent" }, { "deployment", "spire-jwks" } })
      end, touches = "changes: daemonset spire-agent, deployment spire-jwks (rollout restart)" },
    { "Restart spire-agent on every NCN",
      function(ctx)
        local res, summary = restore.on_nodes(ctx, "spire_restart_agent")
        if not res then return nil, summary end
        return summary
      end, touches = "runs: commands.spire_restart_agent on the site's nodes (ssh)" },
    { "Fix the Spire token on the storage nodes", restore.site_step("spire_fix_storage"),
      touches = "runs: commands.spire_fix_storage" },
    { "Verify a JWT can be fetched",
      function(ctx)
        local out, note = restore.command(ctx, "spire_verify_jwt")
        if not out then return nil, note end
        if note then return note end
        -- the token is a credential: it is checked, never shown
        ctx:secret((out:gsub("%s+$", "")))
        if not ctx.dry_run and not out:match("%S") then return nil, "no token was returned" end
        return "a token was returned"
      end, touches = "runs: commands.spire_verify_jwt" },
  } },
}
