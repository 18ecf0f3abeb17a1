-- A failure inside C (an unknown adapter class) raised at the script's line 7.
package.path = (arg[0]:match("^(.*/)") or "./") .. "../?.lua;" .. package.path
local xa = require "xadapt"
local H = require "harness"
local m = xa.model{plm = assert(xa.load_plm(H.bert()))}
-- the next line is line 7
m:insert("xadaptr", {dim = 8})
