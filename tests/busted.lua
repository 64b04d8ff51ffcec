-- tests/busted.lua: runs busted inside pgr, so the specs exercise the real embedded library and
-- native bindings (`pgr tests/busted.lua [busted options] spec/...`).
package.path = "spec/?.lua;" .. package.path
require("busted.runner")({ standalone = false })
