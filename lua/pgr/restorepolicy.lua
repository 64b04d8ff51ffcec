-- pgr.restorepolicy: which errors of a pg_dumpall restore are expected, and how a restore's result
-- reads to a person. Policy, not mechanism: pg.restore only counts; this decides what a failure is.
local M = {}

-- A fresh Zalando cluster already has the roles the operator made (postgres, standby, the service's
-- users) and the databases of its manifest: pg_dumpall's CREATE ROLE / CREATE DATABASE for those fail
-- with duplicate_object / duplicate_database, and psql goes on, as the runbook expects.
M.FRESH_CLUSTER = {
  { sqlstate = "42710", statement = "^%s*CREATE ROLE ", why = "role already exists" },
  { sqlstate = "42P04", statement = "^%s*CREATE DATABASE ", why = "database already exists" },
  { sqlstate = "42P06", statement = "^%s*CREATE SCHEMA public", why = "schema public already exists" },
}

-- Returns an on_error function for pg.restore: rules is a list of {sqlstate=, statement=pattern|nil,
-- message=pattern|nil}; extra rules (e.g. a site's) are appended to the fresh-cluster ones.
function M.fresh_cluster(extra)
  local rules = {}
  for _, r in ipairs(M.FRESH_CLUSTER) do rules[#rules + 1] = r end
  for _, r in ipairs(extra or {}) do rules[#rules + 1] = r end
  return M.matcher(rules)
end

function M.matcher(rules)
  return function(e)
    for _, r in ipairs(rules) do
      if e.sqlstate == r.sqlstate
          and (not r.statement or (e.statement or ""):match(r.statement))
          and (not r.message or (e.message or ""):match(r.message)) then
        return true
      end
    end
    return false
  end
end

-- Every error is unexpected: the strict policy, for restores into an empty server.
function M.strict() return false end

-- Lines summarising a result for a person (used by `pgr restore` and the runbook's restore step).
function M.describe(r, max)
  max = max or 10
  local lines = {}
  local e = r.errors
  lines[#lines + 1] = ("%d statements, %d COPY rows, %d errors (%d unexpected)"):format(
    r.statements, r.copy_rows, e.count, e.unexpected)
  local states = {}
  for st, n in pairs(e.by_sqlstate) do states[#states + 1] = ("%s×%d"):format(st, n) end
  table.sort(states)
  if #states > 0 then lines[#lines + 1] = "errors by SQLSTATE: " .. table.concat(states, " ") end
  local shown = 0
  for _, f in ipairs(e.first) do
    if not f.expected and shown < max then
      shown = shown + 1
      lines[#lines + 1] = ("  line %d [%s]%s %s — %s"):format(f.line, f.sqlstate,
        f.database and (" " .. f.database .. ":") or "", f.message, f.statement)
    end
  end
  if e.unexpected > shown then
    lines[#lines + 1] = ("  (%d more unexpected errors not listed)"):format(e.unexpected - shown)
  end
  return lines
end

return M
