-- Misuse of a C function (a wrong argument type) on line 5 raises "bad argument".
local xa = require "xadapt"
local f = assert(io.open(arg.out .. "/x.png", "w"))
f:close()
xa.write_png(arg.out .. "/x.png", "wide", 1, "abc")
