-- services/vcs.lua: "Restore Postgres for VCS" (CSM) — gitea's database gitea-vcs-postgres, restored
-- into the cluster's own master pod (the runbook's exec line names the gitea pod: that is wrong).
local restore = require "pgr.restore"

return restore.procedure {
  service = "vcs", title = "Restore Postgres for VCS",
  namespace = "services", cluster = "gitea-vcs-postgres",
  client = { kind = "deployment", name = "gitea-vcs", selector = "app.kubernetes.io/name=vcs" },
  users = { "postgres", "service_account", "standby" },
  verbs = { { "get", "persistentvolumeclaims" } },
  hooks = { preflight = {
    { "Check the gitea-vcs-data-claim volume claim exists",
      function(ctx)
        local pvc, err = ctx.k8s:get("persistentvolumeclaims", "gitea-vcs-data-claim")
        if not pvc then return nil, err end
        local phase = pvc.status and pvc.status.phase
        if phase and phase ~= "Bound" then
          return nil, ("the gitea-vcs-data-claim claim is %s, not Bound: VCS's repositories are not "
            .. "there to go with the database"):format(phase)
        end
        return phase or "present"
      end, touches = "reads: persistentvolumeclaim services/gitea-vcs-data-claim" },
  }, after = {
    { "Verify VCS answers", restore.site_step("vcs_verify"), touches = "runs: commands.vcs_verify" },
  } },
}
