-- pgr.restorepolicy: which errors of a pg_dumpall restore are expected, and why; how a restore's
-- result reads to a person. Policy, not mechanism: pg.restore only counts; this decides. Used by both
-- `pgr run` (the runbook's dump step) and `pgr restore`.
--
-- The target is a cluster the operator has just created (or SLS's, whose databases pgr has just
-- dropped). It already holds what Spilo's bootstrap and the operator made: the roles postgres,
-- standby, the service's users, admin, cron_admin, robot_zmon, zalandos; databases postgres,
-- template1 and the manifest's; and in postgres and template1 (so also in every database made from
-- template1) Spilo's schemas, functions, views and extensions, with pg_cron's launcher connected to
-- postgres. A real backup is `pg_dumpall -c` of such a cluster, so it drops and creates all of that.
--
-- Decision: pgr runs a -c dump's DROPs, as psql does, and expects the ones that cannot succeed. In a
-- just-created cluster they can only remove what the operator made empty, and the result is then the
-- same, object for object, as the runbook's psql restore (the e2e tests compare pg_dumpall of both).
-- Skipping them would leave the operator's databases (made from template1, with Spilo's objects and
-- the operator's settings) in place of the dump's. What a DROP may never do is take a database the
-- dump does not create again: preflight refuses such a dump (M.check_drops) before anything changes.
--
-- Expected, each a class with its reason (M.CLASSES):
--   role_exists     CREATE ROLE of a role that exists (42710)
--   role_kept       DROP ROLE of a role the target keeps: the bootstrap superuser, the session's
--                   user, a role holding privileges on Spilo's objects (2BP01, 55006); the dump's
--                   ALTER ROLE then gives it the dump's attributes and password
--   already_gone    DROP of a database or role that is not there (3D000, 42704)
--   database_in_use DROP DATABASE postgres while pg_cron's launcher (and pgr's own session) is
--                   connected to it (55006): postgres is restored in place
--   database_exists CREATE DATABASE of a database that exists (42P04): it was not dropped (postgres),
--                   or the dump has no -c
--   object_exists   CREATE of an object (and ALTER TABLE ADD CONSTRAINT of one) that exists, in a
--                   database this restore did not create itself (42710, 42723, 42P06, 42P07, 42712,
--                   42P16): Spilo's objects in postgres, or in the operator's databases without -c
--   public_schema   CREATE SCHEMA public, which template0 has (42P06)
-- Everything else is unexpected and stops a run before anything more changes; so is an
-- "already exists" inside a database the restore created from template0 (the dump would be making
-- the same object twice, or the target was not the fresh cluster it should be).
local M = {}

M.CLASSES = {
  role_exists = "role exists already (made by the operator or Spilo, or kept by its DROP)",
  role_kept = "role cannot be dropped in the target (bootstrap superuser, the session's user, or it holds "
    .. "privileges on Spilo's objects); the dump's ALTER ROLE sets its attributes and password",
  already_gone = "the database or role to drop is not there",
  database_in_use = "database postgres is in use (pg_cron's launcher, pgr's own session): restored in place",
  database_exists = "database exists already (not dropped, or the dump has no -c); restored into it",
  object_exists = "object exists already in a database the restore did not create (Spilo's bootstrap objects)",
  public_schema = "schema public exists in every new database",
}
M.ORDER = { "role_exists", "role_kept", "already_gone", "database_in_use", "database_exists", "object_exists",
            "public_schema", "site" }

local OBJECT_EXISTS = { ["42710"] = true, ["42723"] = true, ["42P06"] = true, ["42P07"] = true,
                        ["42712"] = true, ["42P16"] = true }

-- The statement's first words, upper-cased: "DROP DATABASE", "ALTER TABLE ONLY x ADD CONSTRAINT".
local function words(sql, n)
  local out = {}
  for w in (sql or ""):gmatch("[%a_]+") do
    out[#out + 1] = w:upper()
    if #out >= n then break end
  end
  return out
end

-- The name a CREATE/DROP DATABASE statement is about, as the server folds it ("a" for A, "B" for "B").
function M.database_name(sql)
  local rest = (sql or ""):match("^%s*[Cc][Rr][Ee][Aa][Tt][Ee]%s+[Dd][Aa][Tt][Aa][Bb][Aa][Ss][Ee]%s+(.*)$")
    or (sql or ""):match("^%s*[Dd][Rr][Oo][Pp]%s+[Dd][Aa][Tt][Aa][Bb][Aa][Ss][Ee]%s+(.*)$")
  if not rest then return nil end
  rest = rest:gsub("^[Ii][Ff]%s+[Ee][Xx][Ii][Ss][Tt][Ss]%s+", "")
  if rest:sub(1, 1) == '"' then
    local name, i = {}, 2
    while i <= #rest do
      local c = rest:sub(i, i)
      if c == '"' then
        if rest:sub(i + 1, i + 1) ~= '"' then return table.concat(name) end
        i = i + 1
      end
      name[#name + 1] = c
      i = i + 1
    end
    return nil
  end
  local w = rest:match("^([%w_$]+)")
  return w and w:lower() or nil
end

local function matches(r, e)
  return e.sqlstate == r.sqlstate
    and (not r.statement or (e.statement or ""):match(r.statement))
    and (not r.message or (e.message or ""):match(r.message))
end

-- new{ mode = "fresh" | "strict", creates = { "spire", ... } (the dump's CREATE DATABASE names, from
-- pg.inspect; without them every database counts as pre-existing), extra = { rules } } -> policy.
-- policy.on_error(e) is pg.restore's on_error; policy:counts() the expected errors by class;
-- policy.class(e) classifies without counting. Extra rules are { sqlstate=, statement=, message=, why= }.
function M.new(opts)
  opts = opts or {}
  local strict = opts.mode == "strict"
  local creates, preexisting, counts = {}, {}, {}
  for _, db in ipairs(opts.creates or {}) do creates[db] = true end
  local self = { counts = counts, extra = opts.extra or {} }

  -- Whether database db existed before this restore touched it: it is not one the dump creates, or
  -- the dump's CREATE DATABASE for it failed because it was there.
  local function existed(db)
    if db == nil then return true end
    return not creates[db] or preexisting[db] == true
  end

  function self.class(e)
    if strict then return nil end
    local st, sql = e.sqlstate, e.statement or ""
    local w = words(sql, 6)
    local verb = (w[1] or "") .. " " .. (w[2] or "")
    if verb == "CREATE ROLE" or verb == "CREATE USER" then
      if st == "42710" then return "role_exists" end
    elseif verb == "DROP ROLE" or verb == "DROP USER" then
      if st == "2BP01" or st == "55006" then return "role_kept" end
      if st == "42704" then return "already_gone" end
    elseif verb == "DROP DATABASE" then
      if st == "3D000" then return "already_gone" end
      if st == "55006" and M.database_name(sql) == "postgres" then return "database_in_use" end
    elseif verb == "CREATE DATABASE" then
      if st == "42P04" then
        local db = M.database_name(sql)
        if db then preexisting[db] = true end
        return "database_exists"
      end
    elseif verb == "CREATE SCHEMA" and (w[3] == "PUBLIC") and st == "42P06" then
      return "public_schema"
    elseif OBJECT_EXISTS[st] and (w[1] == "CREATE" or (w[1] == "ALTER" and w[2] == "TABLE"
        and sql:upper():find("ADD%s+CONSTRAINT"))) then
      if existed(e.database) then return "object_exists" end
    end
    for _, r in ipairs(self.extra) do
      if matches(r, e) then return "site", r.why end
    end
    return nil
  end

  function self.on_error(e)
    local c = self.class(e)
    if not c then return false end
    counts[c] = (counts[c] or 0) + 1
    return true
  end

  -- { { class=, why=, count= }, ... } in M.ORDER
  function self:summary()
    local out = {}
    for _, c in ipairs(M.ORDER) do
      if counts[c] then
        out[#out + 1] = { class = c, why = M.CLASSES[c] or "a rule of the site file", count = counts[c] }
      end
    end
    return out
  end

  return self
end

-- Statements `pgr run` does not send (pg.restore's skip, as script_words writes them): pgr's own
-- session holds database postgres for the whole stream (it outlives the dump's password change), so
-- the dump's DROP DATABASE postgres could only fail, after PostgreSQL's 5-second wait for other
-- sessions to leave; postgres is restored in place, as psql's restore on Spilo (pg_cron) does too.
M.RUN_SKIP = { "drop database postgres ;" }

-- The on_error function of a fresh-cluster policy (the runbook's default), with a site's extra rules.
function M.fresh_cluster(extra, creates)
  return M.new({ extra = extra, creates = creates }).on_error
end

-- Every error is unexpected: the strict policy, for restores into an empty server.
function M.strict() return false end

-- Refuses a dump whose DROP DATABASE names a database it does not create again (a pg_dumpall -c
-- always re-creates what it drops): such a DROP would lose data nothing restores.
-- info: pg.inspect's result. Returns true | nil, message.
function M.check_drops(info)
  local made = {}
  for _, db in ipairs(info.databases or {}) do made[db] = true end
  local lost = {}
  for _, db in ipairs(info.drop_databases or {}) do
    if not made[db] then lost[#lost + 1] = db end
  end
  if #lost > 0 then
    return nil, ("the dump drops database%s %s but never creates %s again: restoring it would lose "
      .. "that data; this is not a pg_dumpall dump as CSM's backup job writes it"):format(
      #lost == 1 and "" or "s", table.concat(lost, ", "), #lost == 1 and "it" or "them")
  end
  return true
end

-- The dump's header facts for a person: "pg_dumpall -c of PostgreSQL 12.11 (by pg_dump 12.11)".
function M.dump_label(info)
  local s = info.format == "pg_dumpall" and "pg_dumpall" or tostring(info.format)
  if info.clean then s = s .. (info.if_exists and " -c --if-exists" or " -c") end
  if info.gzip then s = s .. ", gzip'd" end
  if info.dumped_from then
    s = s .. " of PostgreSQL " .. info.dumped_from:match("^%S+")
    if info.dumped_by and info.dumped_by:match("^%S+") ~= info.dumped_from:match("^%S+") then
      s = s .. " (by pg_dump " .. info.dumped_by:match("^%S+") .. ")"
    end
  end
  return s
end

-- The major version of "12.11 (Debian ...)", "9.6.24", "15devel" or "15": 12, 9.6, 15.
function M.major(version)
  if not version then return nil end
  local a, b = tostring(version):match("^(%d+)%.?(%d*)")
  a = tonumber(a)
  if not a then return nil end
  if a < 10 and b ~= "" then return tonumber(a .. "." .. b) end
  return a
end

-- A dump can be restored into a server of major `target` when neither the server it was dumped from
-- nor the pg_dump that wrote it is newer (pg_dump writes the syntax of its own major: a newer one's
-- CREATE DATABASE ... LOCALE_PROVIDER fails on 14). Returns true | nil, message.
function M.check_version(info, target)
  local t = M.major(target)
  if not t then return true end
  for _, k in ipairs { { "dumped_from", "the dump was taken from PostgreSQL %s" },
                       { "dumped_by", "the dump was written by pg_dump %s" } } do
    local v = info[k[1]]
    local m = M.major(v)
    if m and m > t then
      return nil, (k[2] .. ", newer than the target cluster's PostgreSQL %s (spec.postgresql.version): a "
        .. "dump does not restore into an older major; restore it into a cluster of version %s or newer")
        :format(v:match("^%S+"), tostring(target), tostring(m))
    end
  end
  return true
end

-- Lines summarising a result for a person (used by `pgr restore` and the runbook's restore step).
-- p (optional): the policy, whose summary names each expected class once with its count and reason.
function M.describe(r, max, p)
  max = max or 10
  local lines = {}
  local e = r.errors
  lines[#lines + 1] = ("%d statements, %d COPY rows, %d errors (%d unexpected)"):format(
    r.statements, r.copy_rows, e.count, e.unexpected)
  if p then
    for _, c in ipairs(p:summary()) do
      lines[#lines + 1] = ("  expected ×%d %s: %s"):format(c.count, c.class, c.why)
    end
  else
    local states = {}
    for st, n in pairs(e.by_sqlstate) do states[#states + 1] = ("%s×%d"):format(st, n) end
    table.sort(states)
    if #states > 0 then lines[#lines + 1] = "errors by SQLSTATE: " .. table.concat(states, " ") end
  end
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
