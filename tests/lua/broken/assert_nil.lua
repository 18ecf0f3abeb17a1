-- An expected failure (nil, msg) turned into an error by assert on line 4.
local xa = require "xadapt"
local dir = "/nonexistent/model"
local plm = assert(xa.load_plm(dir))
