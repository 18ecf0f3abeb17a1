-- An error inside a function the trainer calls (on_step): located in the user's function, line 9.
package.path = (arg[0]:match("^(.*/)") or "./") .. "../?.lua;" .. package.path
local xa = require "xadapt"
local H = require "harness"
local m = xa.model{plm = assert(xa.load_plm(H.bert()))}
m:head("cls", {kind = "classify", classes = 2})
xa.train{model = m, data = H.letters(8), head = "cls", max_steps = 3, progress = false,
         on_step = function(s)
           if s.step == 2 then error("stop at step " .. s.step) end
         end}
