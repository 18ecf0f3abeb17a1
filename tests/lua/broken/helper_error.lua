-- A misspelled option of xa.train (a Lua helper): the error points at the call (line 8), not
-- into the helper.
package.path = (arg[0]:match("^(.*/)") or "./") .. "../?.lua;" .. package.path
local xa = require "xadapt"
local H = require "harness"
local m = xa.model{plm = assert(xa.load_plm(H.bert()))}
m:head("cls", {kind = "classify", classes = 2})
xa.train{model = m, data = H.letters(8), head = "cls",
         epoch = 2} -- Lua locates a call spanning lines at its first line
