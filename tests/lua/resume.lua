-- Checkpoints and resume: a run resumed from a checkpoint reproduces the uninterrupted run's
-- losses exactly (parameters, AdamW moments, step, RNG and data order restored), with dropout,
-- accumulation, clipping, bucketing, a schedule and evaluations in between, and a seed above 2^53
-- (the shuffling seed must survive the checkpoint's JSON); and the refusals.
package.path = (arg[0]:match("^(.*/)") or "./") .. "?.lua;" .. package.path
local xa = require "xadapt"
local H = require "harness"

local plm = assert(xa.load_plm(H.bert()))
local data, dev = H.letters(40, 3), H.letters(12, 4)

local function model()
  xa.seed(11)
  local m = xa.model{plm = plm}
  m:insert("bottleneck", {dim = 8, dropout = 0.1})
  m:insert("lora", {rank = 2, dropout = 0.1})
  m:head("cls", {kind = "classify", classes = 2, dropout = 0.2})
  return m
end

local function run(m, extra)
  local o = {model = m, data = data, head = "cls", optim = xa.adamw{lr = 1e-2},
             schedule = xa.schedule.cosine{warmup = 2}, max_steps = 12, batch = 6, accumulate = 2,
             clip = 0.5, seed = 5000000000000000005, dropout = 0.1, progress = false, bucket = true,
             eval = {data = dev, every = 4}}
  for k, v in pairs(extra or {}) do o[k] = v end
  return xa.train(o)
end

local ck = H.out .. "/ck-{step}.safetensors"
local full = run(model(), {checkpoint = {path = ck, every = 4}, log = H.out .. "/full.jsonl"})
H.eq(#full.losses, 12, "uninterrupted run")

-- resume at step 4 and at step 8: the remaining losses are bit for bit the same
for _, at in ipairs({4, 8}) do
  local log = H.out .. "/resumed-" .. at .. ".jsonl"
  -- the interrupted run's log holds lines past the checkpoint: resuming drops them
  local f = assert(io.open(log, "w"))
  for line in io.lines(H.out .. "/full.jsonl") do f:write(line, "\n") end
  f:close()
  local r = run(model(), {resume = H.out .. "/ck-" .. at .. ".safetensors", log = log})
  H.eq(r.steps, 12, "resumed run ends at the same step")
  H.eq(#r.losses, 12, "losses from the log and the resumed steps")
  for i = at + 1, 12 do
    H.eq(r.losses[i], full.losses[i], ("step %d resumed at %d"):format(i, at))
  end
  H.eq(r.final.loss, full.final.loss, "final evaluation")
  local steps, evals = 0, {}
  for line in io.lines(log) do
    local e = xa.json.decode(line)
    if e.type == "train" then steps = steps + 1 end
    if e.type == "eval" then
      H.check(not evals[e.step], "one evaluation per step in the resumed log (step %d)", e.step)
      evals[e.step] = true
    end
  end
  H.eq(steps, 12, "the log holds each step once")
  H.eq(#r.evals, 3, "evaluations at steps 4, 8, 12")
end

-- An adapter switched off mid-run takes no steps (tests/test_adapters.c checks its values stay
-- put); when it comes back its bias correction counts its own steps. Both survive a checkpoint:
-- resumed inside the switched-off stretch, the losses are the uninterrupted run's.
local function switching(extra, off)
  local m = model()
  if off then m:activate("bottleneck", "none") end -- as it was when the checkpoint was written
  local o = {max_steps = 9, eval = nil, optim = xa.adamw{lr = 1e-2, weight_decay = 0.1},
             on_step = function(i)
               if i.step == 3 then m:activate("bottleneck", "none") end
               if i.step == 6 then m:activate("bottleneck", "all") end
             end}
  for k, v in pairs(extra or {}) do o[k] = v end
  return run(m, o)
end
local sw = switching({checkpoint = {path = H.out .. "/sw-{step}.safetensors", every = 4}})
local swr = switching({resume = H.out .. "/sw-4.safetensors"}, true)
H.eq(#swr.losses, 5, "steps 5 to 9 (no log to take the earlier ones from)")
for i = 5, 9 do
  H.eq(swr.losses[i - 4], sw.losses[i], "switching run, step " .. i .. " resumed at 4")
end

-- a finished run resumed again evaluates nothing new: no second row for its last step in the
-- log, no second count toward early stopping, the same final numbers
do
  local log = H.out .. "/again.jsonl"
  local f = assert(io.open(log, "w"))
  for line in io.lines(H.out .. "/full.jsonl") do f:write(line, "\n") end
  f:close()
  local again = run(model(), {resume = H.out .. "/ck-12.safetensors", log = log,
                              early_stop = {patience = 1}})
  H.eq(again.stopped, "finished", "nothing left to run")
  H.eq(#again.evals, 3, "the log's evaluations, none added")
  H.eq(again.final.loss, full.final.loss, "the last evaluation")
  local rows = 0
  for line in io.lines(log) do rows = rows + (line:find('"type":"eval"', 1, true) and 1 or 0) end
  H.eq(rows, 3, "one evaluation row per step")
  local nolog = run(model(), {resume = H.out .. "/ck-12.safetensors"})
  H.eq(nolog.final.loss, full.final.loss, "without a log: computed again, the same")
end

-- the same with SGD momentum and a function objective
local function sgd_run(extra)
  local o = {optim = xa.sgd{lr = 0.05, momentum = 0.9}, schedule = xa.schedule.linear{warmup = 0.2},
             objective = function(s) return s:loss("classify") * 2 end, eval = nil}
  for k, v in pairs(extra or {}) do o[k] = v end
  return run(model(), o)
end
local sfull = sgd_run({checkpoint = {path = H.out .. "/sgd-{step}.safetensors", every = 6}})
local sres = sgd_run({resume = H.out .. "/sgd-6.safetensors"})
for i = 1, 6 do H.eq(sres.losses[i], sfull.losses[i + 6], "sgd step " .. (i + 6)) end

-- refusals: another optimizer, another adapter set, another base, not a checkpoint
H.raises(function() run(model(), {resume = H.out .. "/sgd-6.safetensors"}) end,
         "written by a sgd optimizer, this run uses adamw")
local m2 = model()
m2:insert("bottleneck", {name = "extra", dim = 4})
H.raises(function() run(m2, {resume = H.out .. "/ck-4.safetensors"}) end, "this model has",
         "insert the same adapters")
local other = assert(xa.make_random{arch = "bert-tiny", out = H.out .. "/other", seed = 99,
  vocab = H.words, config = {hidden_size = 32, intermediate_size = 64, num_attention_heads = 2,
                             num_hidden_layers = 2, max_position_embeddings = 64}})
local mo = xa.model{plm = assert(xa.load_plm(other))}
mo:insert("bottleneck", {dim = 8, dropout = 0.1})
mo:insert("lora", {rank = 2, dropout = 0.1})
mo:head("cls", {kind = "classify", classes = 2, dropout = 0.2})
H.raises(function() run(mo, {resume = H.out .. "/ck-4.safetensors"}) end, "another frozen base")
-- a refused checkpoint changes nothing (here the head has another shape; LoRA and bottleneck,
-- checked before it, must not have been overwritten)
local m4 = xa.model{plm = plm}
m4:insert("bottleneck", {dim = 8, dropout = 0.1})
m4:insert("lora", {rank = 2, dropout = 0.1})
m4:head("cls", {kind = "classify", classes = 3, dropout = 0.2})
local function dev_loss(mm) return xa.evaluate{model = mm, data = dev, head = "cls", metrics = {"loss"}}.loss end
local before = dev_loss(m4)
H.raises(function() run(m4, {resume = H.out .. "/ck-4.safetensors"}) end,
         "'param.head.cls.weight' has 64 values in 2 dimensions, this run has 96")
H.eq(dev_loss(m4), before, "a refused checkpoint leaves every parameter as it was")
-- a fixed checkpoint path (no {step}) is written at the end too, not only every N updates
local fixed, calls = H.out .. "/fixed.ckpt", 0
run(model(), {checkpoint = {path = fixed, every = 3}, max_steps = 5, eval = nil})
run(model(), {resume = fixed, max_steps = 5, eval = nil, on_step = function() calls = calls + 1 end})
H.eq(calls, 0, "the checkpoint holds step 5: nothing left to run")
local m3 = model()
m3:save_adapters(H.out .. "/adapters.safetensors")
H.raises(function() run(model(), {resume = H.out .. "/adapters.safetensors"}) end,
         "not an xadapt training checkpoint")
-- a missing checkpoint starts from scratch (a first run of a script that resumes)
local fresh = run(model(), {resume = H.out .. "/none.safetensors", max_steps = 2})
H.eq(fresh.steps, 2, "no checkpoint: from step 0")
H.eq(fresh.losses[1], full.losses[1], "and the same as a fresh run")

H.done("resume")
