-- Learning-rate schedules: functions (step, total) -> multiplier of the optimizer's lr, where
-- step counts the optimizer updates done before this one (0-based) and total is the number of
-- updates of the run. Warmup is a number of steps (>= 1) or a fraction of total (< 1). Any Lua
-- function with that signature is a schedule too.
local xa = require "xadapt"
local U = require "xadapt.util"

local S = {}

local function warmup_steps(fname, w, total)
  if w == nil then return 0 end
  if type(w) ~= "number" or w < 0 or w ~= w then
    U.raise("%s: warmup must be a number of steps (>= 1) or a ratio of the run (< 1), got %s",
            fname, tostring(w))
  end
  if w < 1 then return math.ceil(total * w) end -- TrainingArguments.get_warmup_steps
  return math.floor(w)
end

local function make(name, opts, keys, body)
  opts = U.check_opts("xa.schedule." .. name, opts, keys, true)
  local fname = "xa.schedule." .. name
  warmup_steps(fname, opts.warmup, 1) -- validate now, not at the first step
  if opts.min ~= nil and (type(opts.min) ~= "number" or opts.min < 0 or opts.min > 1) then
    U.raise("%s: min must be a number in [0, 1], got %s", fname, tostring(opts.min))
  end
  local f = function(step, total)
    local w = warmup_steps(fname, opts.warmup, total)
    if step < w then return step / math.max(1, w) end
    return body(step, total, w, opts.min or 0)
  end
  return setmetatable({name = name, opts = opts}, {
    __call = function(_, step, total) return f(step, total) end,
    __name = "xadapt.Schedule",
    __tostring = function() return "xadapt.Schedule(" .. name .. ")" end,
  })
end

-- Constant after an optional linear warmup (get_constant_schedule_with_warmup).
function S.constant(opts)
  return make("constant", opts, {"warmup"}, function() return 1.0 end)
end

-- Linear warmup, then linear decay to `min` (default 0) at the last step: transformers'
-- get_linear_schedule_with_warmup (the warmup starts at 0, as there).
function S.linear(opts)
  return make("linear", opts, {"warmup", "min"}, function(step, total, w, min)
    local frac = (total - step) / math.max(1, total - w)
    return min + (1 - min) * math.max(0, frac)
  end)
end

-- Linear warmup, then half a cosine down to `min` (default 0): transformers'
-- get_cosine_schedule_with_warmup with num_cycles = 0.5.
function S.cosine(opts)
  return make("cosine", opts, {"warmup", "min"}, function(step, total, w, min)
    local progress = (step - w) / math.max(1, total - w)
    return min + (1 - min) * math.max(0, 0.5 * (1 + math.cos(math.pi * progress)))
  end)
end

-- The multiplier of schedule `s` (a schedule, a function, or nil = constant 1) at `step`.
function S.value(s, step, total)
  if s == nil then return 1.0 end
  local ok, v = pcall(s, step, total)
  if not ok then
    error(v, 0)
  end
  if type(v) ~= "number" or v ~= v or v < 0 or v == math.huge then
    U.raise("the schedule returned %s at step %d of %d: it must be a finite number >= 0",
            tostring(v), step, total)
  end
  return v
end

xa.schedule = S
return S
