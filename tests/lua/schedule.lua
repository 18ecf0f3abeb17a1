-- Learning-rate schedules: values against transformers' formulas, warmup as steps or ratio,
-- user functions, and the errors.
package.path = (arg[0]:match("^(.*/)") or "./") .. "?.lua;" .. package.path
local xa = require "xadapt"
local H = require "harness"

local S = xa.schedule
local total = 100

-- constant: 1 after the warmup; warmup ramps from 0 like get_constant_schedule_with_warmup
local c = S.constant{}
H.eq(c(0, total), 1.0, "constant")
H.eq(c(99, total), 1.0, "constant at the end")
local cw = S.constant{warmup = 10}
H.eq(cw(0, total), 0.0, "constant warmup start")
H.near(cw(5, total), 0.5, 1e-12, "constant warmup middle")
H.eq(cw(10, total), 1.0, "constant after warmup")

-- linear: warmup then (total - step) / (total - warmup)
local l = S.linear{warmup = 10}
H.near(l(5, total), 0.5, 1e-12, "linear warmup")
H.near(l(10, total), 1.0, 1e-12, "linear peak")
H.near(l(55, total), 0.5, 1e-12, "linear middle")
H.near(l(100, total), 0.0, 1e-12, "linear end")
-- a ratio < 1 is a fraction of the run
local lr = S.linear{warmup = 0.1}
H.near(lr(5, total), 0.5, 1e-12, "linear warmup ratio")
H.near(lr(5, 200), 0.25, 1e-12, "ratio scales with the run")
-- a ratio is rounded up, as transformers' get_warmup_steps: ceil(120 * 0.06) = 8 (not 7),
-- ceil(3 * 0.1) = 1 (not 0)
local r6 = S.linear{warmup = 0.06}
H.near(r6(1, 120), 1 / 8, 1e-12, "ratio 0.06 of 120 updates: 8 warmup steps")
H.near(S.linear{warmup = 0.1}(0, 3), 0.0, 1e-12, "ratio 0.1 of 3 updates: 1 warmup step")
-- min: decays to min instead of 0
local lm = S.linear{min = 0.1}
H.near(lm(100, total), 0.1, 1e-12, "linear min")
H.near(lm(0, total), 1.0, 1e-12, "linear start")

-- cosine: 0.5 (1 + cos(pi progress))
local cs = S.cosine{warmup = 20}
H.near(cs(10, total), 0.5, 1e-12, "cosine warmup")
H.near(cs(20, total), 1.0, 1e-12, "cosine peak")
H.near(cs(60, total), 0.5, 1e-12, "cosine middle")
H.near(cs(40, total), 0.5 * (1 + math.cos(math.pi * 0.25)), 1e-12, "cosine quarter")
H.near(cs(100, total), 0.0, 1e-12, "cosine end")

-- errors
H.raises(function() S.linear{warmpu = 10} end, "unknown option 'warmpu'", "valid: min, warmup")
H.raises(function() S.cosine{warmup = -1} end, "warmup must be a number")
H.raises(function() S.linear{min = 2} end, "min must be a number in [0, 1]")

-- schedules drive the learning rate xa.train gives the optimizer (logged per step)
local m = xa.model{plm = assert(xa.load_plm(H.bert()))}
m:head("cls", {kind = "classify", classes = 2})
local seen = {}
xa.train{model = m, data = H.letters(8), head = "cls", optim = xa.adamw{lr = 0.5},
         schedule = function(step, total_) return (step + 1) / total_ end, max_steps = 4,
         batch = 2, progress = false,
         on_step = function(s) seen[s.step] = s.lr end}
for step = 1, 4 do H.near(seen[step], 0.5 * step / 4, 1e-6, "lr at step " .. step) end
local r = xa.train{model = m, data = H.letters(8), head = "cls", optim = xa.sgd{lr = 0.2},
                   schedule = S.linear{warmup = 2}, max_steps = 6, batch = 2, progress = false,
                   on_step = function(s) seen[s.step] = s.lr end}
H.eq(r.steps, 6, "steps")
H.near(seen[1], 0.0, 1e-9, "linear warmup step 1")
H.near(seen[2], 0.1, 1e-6, "linear warmup step 2")
H.near(seen[3], 0.2, 1e-6, "linear peak")
H.near(seen[6], 0.2 * 1 / 4, 1e-6, "linear decay")
-- a schedule returning a bad value is an error naming the step
H.raises(function()
  xa.train{model = m, data = H.letters(8), head = "cls", max_steps = 2, batch = 2,
           progress = false, schedule = function() return -1 end}
end, "the schedule returned -1 at step 0")

H.done("schedule")
