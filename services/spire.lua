-- services/spire.lua: "Restore Postgres for Spire" (CSM) — the common restore of spire-postgres,
-- then Spire's own steps: restart the agents and jwks, restart spire-agent on every NCN, fix, verify.
local restore = require "pgr.restore"

local AGENTS = { { "daemonset", "spire-agent" }, { "deployment", "spire-jwks" } }

return restore.procedure {
  service = "spire", title = "Restore Postgres for Spire",
  namespace = "spire", cluster = "spire-postgres",
  client = { kind = "statefulset", name = "spire-server", selector = "app.kubernetes.io/name=spire-server" },
  users = { "postgres", "service_account", "spire", "standby" },
  dependants = AGENTS,  -- what pgr status shows beside the client
  verbs = { { "patch", "daemonsets" }, { "patch", "deployments" } },
  -- the NCNs' agents restart while the pods' agents roll out: neither waits for the other
  hooks = { after = {
    { "Restart the spire-agent daemonset and the spire-jwks deployment",
      function(ctx) return restore.start_rollouts(ctx, AGENTS) end,
      touches = "changes: daemonset spire-agent, deployment spire-jwks (rollout restart)" },
    { "Restart spire-agent on every NCN",
      function(ctx)
        local res, summary = restore.on_nodes(ctx, "spire_restart_agent")
        if not res then return nil, summary end
        return summary
      end, touches = "runs: commands.spire_restart_agent on the site's nodes (ssh)",
      uses = { "spire_restart_agent" }, on_nodes = true },
    { "Wait for the rollouts of the spire-agent daemonset and the spire-jwks deployment",
      function(ctx) return restore.wait_rollouts(ctx, AGENTS) end,
      touches = "reads: daemonset spire-agent, deployment spire-jwks" },
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
      end, touches = "runs: commands.spire_verify_jwt", uses = { "spire_verify_jwt" } },
  } },
}
