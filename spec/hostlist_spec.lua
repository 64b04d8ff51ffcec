-- Specs of pgr.hostlist: expansion, folding, set operations and syntax errors, with cases from
-- pdsh's and ClusterShell's documented hostlist syntax.
local hostlist = require "pgr.hostlist"
local errors = require "pgr.errors"

local function expand(p)
  local list, err = hostlist.expand(p)
  assert(list, err and tostring(err))
  return list
end

local function fails(p)
  local list, err = hostlist.expand(p)
  assert.is_nil(list)
  assert.is_true(errors.is(err))
  assert.equals("hostlist", err.code)
  return err
end

describe("pgr.hostlist expand", function()
  it("expands ranges and lists in brackets, keeping zero padding", function()
    assert.same({ "ncn-w001", "ncn-w002", "ncn-w003", "ncn-w005" }, expand("ncn-w00[1-3,5]"))
    assert.same({ "foo01", "foo02", "foo03" }, expand("foo[01-03]"))
    assert.same({ "n8", "n9", "n10" }, expand("n[8-10]"))
    assert.same({ "n098", "n099", "n100" }, expand("n[098-100]"))
  end)

  it("multiplies several bracket groups, the first one outermost (ClusterShell)", function()
    local l = expand("x[1000-1001]c[0-7]")
    assert.equals(16, #l)
    assert.equals("x1000c0", l[1])
    assert.equals("x1000c7", l[8])
    assert.equals("x1001c0", l[9])
    assert.same({ "a1b1", "a1b2", "a2b1", "a2b2" }, expand("a[1-2]b[1-2]"))
  end)

  it("takes comma lists, suffixes after brackets, and a step (ClusterShell's /2)", function()
    assert.same({ "ncn-m001", "ncn-w001", "ncn-s001" }, expand("ncn-m001,ncn-w001,ncn-s001"))
    assert.same({ "n1-eth0", "n2-eth0" }, expand("n[1-2]-eth0"))
    assert.same({ "node0", "node2", "node4", "node6" }, expand("node[0-6/2]"))
    assert.same({ "a", "b" }, expand(" a , b ,"))
  end)

  it("drops duplicates, keeping the first position", function()
    assert.same({ "n1", "n2", "n3" }, expand("n[1-2],n[2-3],n1"))
  end)

  it("excludes pdsh-style (-host) and with ClusterShell's !, & and ^", function()
    assert.same({ "host1", "host2", "host4", "host5" }, expand("host[1-5],-host3"))
    assert.same({ "node1", "node2", "node3", "node4", "node7", "node8", "node9", "node10" },
      expand("node[1-10]!node[5-6]"))
    assert.same({ "node5", "node6" }, expand("node[1-6]&node[5-20]"))
    assert.same({ "n1", "n4" }, expand("n[1-3]^n[2-4]"))
    -- left to right
    assert.same({ "n1", "n5" }, expand("n[1-3]!n[2-3],n5"))
  end)

  it("accepts a list as it is, without duplicates", function()
    assert.same({ "a", "b" }, expand({ "a", "b", "a" }))
  end)

  it("counts", function()
    assert.equals(9, hostlist.count("ncn-m00[1-3],ncn-w00[1-3],ncn-s00[1-3]"))
    assert.equals(0, hostlist.count(""))
    assert.is_true(hostlist.contains("ncn-w00[1-3]", "ncn-w002"))
    assert.is_false(hostlist.contains("ncn-w00[1-3]", "ncn-w004"))
  end)

  it("offers union, difference (exclude), intersection, xor on patterns and lists", function()
    assert.same({ "n1", "n2", "n3" }, hostlist.union("n[1-2]", { "n3", "n1" }))
    assert.same({ "n1", "n3" }, hostlist.difference("n[1-3]", "n2"))
    assert.same({ "n1", "n3" }, hostlist.exclude("n[1-3]", { "n2" }))
    assert.same({ "n2", "n3" }, hostlist.intersection("n[1-3]", "n[2-9]"))
    assert.same({ "n1", "n4" }, hostlist.xor("n[1-3]", "n[2-4]"))
    assert.same({ "n1" }, hostlist.difference("n[1-3]", "n2", "n3"))
    local l, err = hostlist.union("n[1-3]", "bad[")
    assert.is_nil(l)
    assert.equals(4, err.position)
  end)
end)

describe("pgr.hostlist errors", function()
  it("names the position of an unclosed bracket", function()
    local err = fails("node[1-3")
    assert.equals(5, err.position)
    assert.matches("unclosed '%[' at position 5", err.message)
  end)

  it("names a stray ']', a nested '[', and empty brackets", function()
    assert.equals(5, fails("node]").position)
    assert.equals(7, fails("node[1[2]]").position)
    assert.matches("empty brackets", fails("node[]").message)
  end)

  it("rejects reversed and non-numeric ranges, at the element's position", function()
    local err = fails("n[1,3-1]")
    assert.equals(5, err.position)
    assert.matches("reversed range '3%-1'", err.message)
    assert.equals(3, fails("n[a-b]").position)
    assert.equals(5, fails("n[1,,2]").position)
  end)

  it("rejects an operator without a right side and a lone '-'", function()
    assert.matches("missing host after '!'", fails("n[1-2]!").message)
    assert.matches("missing host after '%-'", fails("a,-").message)
  end)

  it("rejects spaces inside a name and absurd sizes", function()
    assert.equals(3, fails("ab cd").position)
    assert.matches("too large", fails("n[1-100000000]").message)
    assert.matches("more than", fails("a[1-2000]b[1-2000]").message)
  end)

  it("raises on misuse (not a pattern)", function()
    assert.has_error(function() hostlist.expand(42) end)
    assert.has_error(function() hostlist.expand({ "a", 1 }) end)
  end)
end)

describe("pgr.hostlist fold", function()
  it("folds to the shortest bracketed form, sorted like nodeset -f", function()
    assert.equals("ncn-w[001-003,005]", hostlist.fold({ "ncn-w005", "ncn-w001", "ncn-w002", "ncn-w003" }))
    assert.equals("ncn-m[001-003],ncn-s[001-003],ncn-w[001-003]",
      hostlist.fold("ncn-w00[1-3],ncn-m00[1-3],ncn-s00[1-3]"))
    assert.equals("n[8-12]", hostlist.fold("n[8-12]"))
    assert.equals("foo[08-12]", hostlist.fold("foo[08-12]"))
    assert.equals("foo[098-101]", hostlist.fold("foo[098-101]"))
  end)

  it("keeps single hosts and names without numbers as they are", function()
    assert.equals("ncn-w001", hostlist.fold({ "ncn-w001" }))
    assert.equals("alpha,beta", hostlist.fold({ "beta", "alpha" }))
    assert.equals("", hostlist.fold({}))
  end)

  it("folds over several dimensions", function()
    assert.equals("x[1000-1001]c[0-7]", hostlist.fold("x[1000-1001]c[0-7]"))
    assert.equals("x1000c[0-1]s[0-7]b0n[0-1]", hostlist.fold("x1000c[0-1]s[0-7]b0n[0-1]"))
    assert.equals("a[1-2]b[2-3],a3b3", hostlist.fold({ "a1b2", "a1b3", "a2b2", "a2b3", "a3b3" }))
  end)

  it("is the inverse of expand", function()
    for _, p in ipairs({ "ncn-w[001-003,005]", "x[1000-1001]c[0-7]", "node[1-4,7-10]", "n[01-03,9-11]",
                         "a[1-2]b[2-3],a3b3,z" }) do
      local again = hostlist.expand(hostlist.fold(p))
      assert.same(hostlist.expand(p), again)
      assert.equals(p, hostlist.fold(p))
    end
  end)

  it("returns the error of a bad pattern", function()
    local s, err = hostlist.fold("n[")
    assert.is_nil(s)
    assert.equals(2, err.position)
  end)
end)
