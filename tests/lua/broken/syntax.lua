-- A syntax error on line 3: `xadapt run` reports it with the file and line, exit status 1.
local xa = require "xadapt"
local x = = 1
