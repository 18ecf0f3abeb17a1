-- A Lua runtime error on line 4.
local xa = require "xadapt"
local t = nil
print(t.field)
