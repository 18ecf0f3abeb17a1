-- Progress of a run: a one-line bar redrawn in place on a terminal (step, loss, lr, examples/s,
-- ETA), plain log lines every few steps when the output is piped, and the closing summary table.
local xa = require "xadapt"
local U = require "xadapt.util"

local P = {}
P.__index = P

-- P.new{total=, tty=, every=, out=, label=}
function P.new(opts)
  local self = setmetatable({}, P)
  self.total = opts.total
  self.out = opts.out or io.stdout
  if opts.tty == nil then self.tty = xa.isatty(1) else self.tty = opts.tty end
  self.every = opts.every or math.max(1, self.total // 20)
  self.label = opts.label or "train"
  self.t0 = xa.clock()
  self.start_step = opts.start or 0
  self.examples = 0
  self.enabled = opts.enabled ~= false
  self.last_draw = 0
  return self
end

local function bar(frac, width)
  local full = math.floor(frac * width + 0.5)
  return ("#"):rep(full) .. ("."):rep(width - full)
end

-- info: {step=, loss=, lr=, examples=}
function P:update(info)
  self.examples = self.examples + (info.examples or 0)
  if not self.enabled then return end
  local now = xa.clock()
  local elapsed = now - self.t0
  local done = info.step - self.start_step
  local rate = elapsed > 0 and self.examples / elapsed or 0
  local eta = done > 0 and elapsed / done * (self.total - info.step) or math.huge
  local line = ("%s %d/%d  loss %.4f  lr %.2e  %.1f ex/s  ETA %s"):format(self.label, info.step,
    self.total, info.loss, info.lr, rate, U.duration(eta))
  if self.tty then
    if now - self.last_draw < 0.1 and info.step < self.total then return end
    self.last_draw = now
    self.out:write(("\r[%s] %s\27[K"):format(bar(info.step / self.total, 24), line))
    self.out:flush()
  elseif info.step % self.every == 0 or info.step == self.total or info.step == self.start_step + 1 then
    self.out:write(line, "\n")
    self.out:flush()
  end
end

-- A message between bar updates (evaluations, checkpoints).
function P:note(msg)
  if not self.enabled then return end
  if self.tty then self.out:write("\r\27[K") end
  self.out:write(msg, "\n")
  self.out:flush()
end

function P:finish()
  if self.enabled and self.tty then
    self.out:write("\n")
    self.out:flush()
  end
  return xa.clock() - self.t0
end

-- rows: { {"label", "value"}, ... } printed as an aligned table under a title.
function P.table(title, rows, out)
  out = out or io.stdout
  local w = 0
  for _, r in ipairs(rows) do w = math.max(w, #r[1]) end
  out:write(title, "\n")
  for _, r in ipairs(rows) do
    out:write(("  %-" .. w .. "s  %s\n"):format(r[1], r[2]))
  end
  out:flush()
end

return P
