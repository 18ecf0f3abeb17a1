-- Training: objectives (classify, regress, mlm, a function), optimizers, accumulation and
-- clipping, evaluation and early stopping, the same seed giving the same run, logs, the loss
-- curve, checkpoints, and the errors of xa.train.
package.path = (arg[0]:match("^(.*/)") or "./") .. "?.lua;" .. package.path
local xa = require "xadapt"
local H = require "harness"

local plm = assert(xa.load_plm(H.bert()))
local data = H.letters(48, 1)
local dev = H.letters(24, 2)

local function model(kind)
  xa.seed(7)
  local m = xa.model{plm = plm}
  m:insert(kind or "bottleneck", {dim = 8})
  m:head("cls", {kind = "classify", classes = 2, dropout = 0, pool = "mean"})
  return m
end

-- classify: the loss falls, the logs and the curve are written
local m = model()
local log = H.out .. "/run.jsonl"
local r = xa.train{model = m, data = data, head = "cls", optim = xa.adamw{lr = 2e-2},
                   epochs = 6, batch = 8, seed = 1, log = log, progress = false,
                   eval = {data = dev, metrics = {"accuracy", "f1", "matthews", "loss"}}}
H.eq(r.steps, 36, "steps = epochs x batches")
H.eq(#r.losses, 36, "a loss per step")
local function mean(t, i, j)
  local s = 0
  for k = i, j do s = s + t[k] end
  return s / (j - i + 1)
end
H.check(mean(r.losses, 31, 36) < mean(r.losses, 1, 6), "the loss falls (%g -> %g)",
        mean(r.losses, 1, 6), mean(r.losses, 31, 36))
H.eq(#r.evals, 6, "an evaluation per epoch")
H.check(r.final.accuracy > 0.5, "accuracy %g", r.final.accuracy)
H.check(r.final.f1 and r.final.matthews, "f1 and matthews")
local lines, train_lines, eval_lines = 0, 0, 0
for line in io.lines(log) do
  lines = lines + 1
  local e = xa.json.decode(line)
  if e.type == "train" then
    train_lines = train_lines + 1
    H.check(e.loss and e.lr and e.grad_norm and e.step, "train line fields")
  elseif e.type == "eval" then
    eval_lines = eval_lines + 1
  end
end
H.eq(train_lines, 36, "train lines")
H.eq(eval_lines, 6, "eval lines")
H.eq(r.plot, H.out .. "/run.svg", "the curve is written beside the log")
local svg = H.read(r.plot)
H.check(svg and svg:find("<polyline", 1, true) and svg:find("</svg>", 1, true), "SVG curve")
H.check(svg:find(">step<", 1, true) and svg:find(">loss<", 1, true), "SVG axis labels")

-- xa.evaluate agrees with the trainer's last evaluation
local e = xa.evaluate{model = m, data = dev, head = "cls", metrics = {"accuracy", "loss"}}
H.near(e.accuracy, r.final.accuracy, 1e-12, "evaluate accuracy")
H.near(e.loss, r.final.loss, 1e-6, "evaluate loss")
H.eq(e.n, #dev, "evaluated examples")

-- the same seed gives the same run; another seed another
local function losses(seed, extra)
  local mm = model()
  local o = {model = mm, data = data, head = "cls", optim = xa.adamw{lr = 1e-2}, max_steps = 5,
             batch = 8, seed = seed, progress = false, dropout = 0.1}
  for k, v in pairs(extra or {}) do o[k] = v end
  return xa.train(o).losses
end
local a, b, c = losses(3), losses(3), losses(4)
for i = 1, 5 do H.eq(a[i], b[i], "same seed, step " .. i) end
local differ = false
for i = 1, 5 do differ = differ or a[i] ~= c[i] end
H.check(differ, "another seed changes the run")

-- accumulation: 2 x 4 accumulated is one step of 8 without dropout
local acc = losses(3, {batch = 4, accumulate = 2, max_steps = 3, dropout = 0, shuffle = false})
local one = losses(3, {batch = 8, max_steps = 3, dropout = 0, shuffle = false})
H.near(acc[1], one[1], 1e-6, "accumulated first loss")
H.near(acc[3], one[3], 1e-4, "accumulated training follows the big batch")
-- clipping and SGD run and log the norm before clipping
local norms = {}
losses(3, {optim = xa.sgd{lr = 0.1, momentum = 0.9, nesterov = true}, clip = 1e-3,
           on_step = function(s) norms[#norms + 1] = s.grad_norm end})
H.check(norms[1] > 1e-3, "the logged norm is before clipping")

-- regress and mlm objectives
local mr = model()
mr:head("reg", {kind = "regress", dropout = 0})
local reg = xa.data.from({{text = "a b", label = 1.5}, {text = "c d", label = -0.5},
                          {text = "e f", label = 0.5}, {text = "g h", label = 2.0}})
local rr = xa.train{model = mr, data = reg, head = "reg", optim = xa.adamw{lr = 5e-2},
                    epochs = 30, batch = 4, progress = false,
                    eval = {data = reg, metrics = {"pearson", "spearman", "loss"}}}
H.eq(xa.train ~= nil and rr.steps, 30, "regress steps")
H.check(rr.loss < rr.losses[1], "regression loss falls")
H.check(rr.final.pearson > 0.5, "pearson %g", rr.final.pearson)
-- a loss that is not finite stops the run before its backward and says where it came from
local huge = xa.data.from({{text = "a b", label = 1e30}, {text = "c d", label = -0.5}})
local function diverge(d, lr)
  local mx = model()
  mx:head("reg", {kind = "regress", dropout = 0})
  return function()
    xa.train{model = mx, data = d, head = "reg", optim = xa.sgd{lr = lr}, epochs = 5, batch = 2,
             progress = false}
  end
end
H.raises(diverge(huge, 1e-3), "the training loss is +Inf at step 1 (epoch 1), before any update",
         "check its inputs and labels")
H.raises(diverge(reg, 1e36), "the training loss is +Inf at step 2 (epoch 1), every trainable "
         .. "parameter finite: 1 update may have made them too large")
H.raises(diverge(reg, 3e38), "the training loss is NaN at step 2 (epoch 1): parameters hold NaN "
         .. "or Inf (head.reg.weight, head.reg.bias); if updates put them there")
local mm = model()
local rm = xa.train{model = mm, data = data, objective = "mlm", optim = xa.adamw{lr = 1e-2},
                    epochs = 2, batch = 8, seed = 2, progress = false, eval = {data = dev}}
H.check(rm.final.loss > 0, "mlm eval loss")
-- the eval masks the same tokens every time and leaves the training RNG alone
local e1 = xa.evaluate{model = mm, data = dev, objective = "mlm"}
local e2 = xa.evaluate{model = mm, data = dev, objective = "mlm"}
H.eq(e1.loss, e2.loss, "deterministic MLM evaluation")

-- a choice head: one row per (example, choice), the label is the right choice
local mc = model()
mc:head("pick", {kind = "choice", choices = 3, pool = "mean", dropout = 0})
local qa = {}
for i = 1, 12 do
  local right = (i - 1) % 3
  local ch = {}
  for j = 0, 2 do ch[j + 1] = j == right and "a a a" or "b c d" end
  qa[i] = {text = "what is it", choices = ch, label = right}
end
local rc = xa.train{model = mc, data = xa.data.from(qa), head = "pick", optim = xa.adamw{lr = 3e-2},
                    epochs = 15, batch = 4, progress = false,
                    eval = {data = xa.data.from(qa), metrics = {"accuracy"}}}
H.check(rc.final.accuracy > 0.9, "the choice head learns (accuracy %g)", rc.final.accuracy)

-- a function objective combines losses
local mf = model()
mf:head("mlm", {kind = "mlm"})
local rf = xa.train{model = mf, data = data, head = "cls", mlm = 0.15, max_steps = 4, batch = 8,
                    progress = false,
                    objective = function(s)
                      return s:loss("classify") + 0.5 * s:loss("mlm", {head = "mlm"})
                    end}
H.eq(#rf.losses, 4, "function objective")
H.raises(function()
  xa.train{model = mf, data = data, head = "cls", max_steps = 1, progress = false,
           objective = function() return 1 end}
end, "the objective function must return a loss")
local stale
xa.train{model = mf, data = data, head = "cls", max_steps = 2, progress = false,
         objective = function(s)
           stale = s:loss("classify")
           return stale
         end}
H.raises(function() return stale:value() end, "belongs to an earlier step")

-- the step-level API: a loop of one's own
local ms = model()
local opt = xa.adamw{lr = 1e-2}
opt:_bind(ms)
local first, last
for step = 1, 10 do
  local b = xa.batch(ms:tokenizer(), data.examples, {1, 2, 3, 4, 5, 6, 7, 8}, {labels = "int"})
  ms:_forward(b, {train = true})
  local loss = ms:_loss("classify", {head = "cls"})
  ms:_backward(loss)
  if step == 1 then first = loss:value() end
  last = loss:value()
  ms:_end()
  H.check(opt:step(1e-2, 1.0, 0) > 0, "gradient norm")
end
H.check(last < first, "own loop learns (%g -> %g)", first, last)
H.eq(opt.steps, 10, "optimizer steps")
H.eq(opt.kind, "adamw", "optimizer kind")
local b = xa.batch(ms:tokenizer(), data.examples, {1, 2, 3}, {labels = "int"})
ms:_forward(b, {train = false})
local preds = ms:_predict("cls")
H.eq(#preds, 3, "predictions")
H.check(preds[1] == 0 or preds[1] == 1, "class indices")
H.raises(function() ms:_backward(ms:_loss("classify", {head = "cls"})) end,
         "backward after a forward with train = false")
H.raises(function() ms:_loss("xent", {head = "cls"}) end, "'xent' is not a loss")
ms:_end()
H.raises(function() ms:_loss("classify", {head = "cls"}) end, "no forward pass in this step")
H.raises(function() ms:_forward(b, {trian = true}) end, "unknown option 'trian'")

-- early stopping and on_step
local re = xa.train{model = model(), data = data, head = "cls", optim = xa.sgd{lr = 1e-9},
                    max_steps = 60, batch = 8, progress = false,
                    eval = {data = dev, every = 2, metrics = {"loss"}},
                    early_stop = {metric = "loss", patience = 2, mode = "min"}}
H.check(re.stopped:find("early stop", 1, true), "early stop: %s", re.stopped)
H.check(re.steps < 60, "stopped early at %d", re.steps)
local ro = xa.train{model = model(), data = data, head = "cls", max_steps = 10, progress = false,
                    on_step = function(s) return s.step < 3 end}
H.eq(ro.steps, 3, "on_step returning false stops")

-- checkpoints: atomic files, {step} in the name
local ck = H.out .. "/ck"
assert(xa.mkdir(ck))
xa.train{model = model(), data = data, head = "cls", max_steps = 4, batch = 8, progress = false,
         checkpoint = {path = ck .. "/s{step}.safetensors", every = 2}}
local files = xa.listdir(ck)
table.sort(files)
H.eq(table.concat(files, " "), "s2.safetensors s4.safetensors", "checkpoints, no temp files")

-- errors: options, objectives, heads, data
local base = {model = m, data = data, head = "cls", progress = false}
local with = H.with(xa.train, base)
H.raises(with({epoch = 2}), "xa.train: unknown option 'epoch'", "epochs")
H.raises(with({objective = "classfy"}), "objective = classfy", "classify, regress, mlm, distill")
H.raises(with({head = "nope"}), "no head named 'nope'", "cls")
H.raises(function() xa.train{model = m, data = data, objective = "classify"} end, "needs head =")
H.raises(function() xa.train{model = m, data = data} end, "objective = classify | regress")
H.raises(with({objective = "regress"}), "needs a regress head")
H.raises(with({optim = {lr = 1}}), "optim must be xa.adamw")
H.raises(with({data = {}}), "data must be a dataset")
H.raises(with({data = xa.data.from({})}), "the data set is empty")
H.raises(with({eval = {data = dev, metrics = {"pearson"}}}), "metric 'pearson' does not apply")
H.raises(with({eval = {data = dev, evry = 2}}), "unknown option 'evry'", "every")
H.raises(with({early_stop = {patience = 2}}), "early_stop needs eval")
H.raises(with({eval = {data = dev}, early_stop = {metric = "f1"}}), "'f1' is not one of the eval metrics")
H.raises(with({features = {images = true}}), "CLIP features need a VLM")
H.raises(with({mlm = 1.5}), "mlm must be a masking probability")
-- wrong types and ranges are refused before the first step (they used to fail after step 1,
-- at the first evaluation after a whole epoch, or never)
local steps_run = 0
local function counting(t)
  t.on_step = t.on_step or function() steps_run = steps_run + 1 end
  return with(t)
end
H.raises(counting({eval = {data = dev, batch = 0}}), "xa.train: eval.batch must be >= 1, got 0")
H.raises(counting({eval = {data = dev, every = 0}}), "eval.every must be >= 1")
H.raises(counting({eval = {data = dev, every = -1}}), "eval.every must be >= 1")
H.raises(counting({checkpoint = {path = H.out .. "/x", every = 0}}), "checkpoint.every must be >= 1")
H.raises(counting({eval = {data = dev}, early_stop = {patience = 0}}), "early_stop.patience must be >= 1")
H.raises(with({on_step = 5}), "on_step must be a function, got number")
H.raises(counting({shuffle = 0}), "shuffle must be a boolean, got number")
H.raises(counting({bucket = "yes"}), "bucket must be a boolean")
H.raises(counting({progress = "no"}), "progress must be a boolean")
H.raises(counting({log = 5}), "log must be a string, got number")
H.raises(counting({log = true}), "log must be a string, got boolean")
H.raises(counting({plot = true}), "plot must be a path or false")
H.raises(counting({name = {}}), "name must be a string")
H.raises(counting({max_length = 0}), "max_length must be >= 1, got 0")
H.raises(counting({dropout = "x"}), "dropout must be a number, got string")
H.raises(counting({dropout = 1}), "dropout must be in [0, 1)")
H.raises(counting({cache_dir = 3}), "cache_dir must be a string")
H.raises(counting({cache_dir = H.out .. "/feats"}), "CLIP features (cache_dir keeps them) need a VLM")
H.raises(counting({distill = {loss = "mse"}}), "distill = {...} is for objective = \"distill\"", "not classify")
H.eq(steps_run, 0, "no step ran before the errors")
H.raises(function() xa.evaluate{model = m, data = dev, head = "cls", batch = 0} end,
         "xa.evaluate: batch must be >= 1")
H.raises(with({data = xa.data.from({{text = "a", label = 5}})}), "example #1: label 5 is outside the head's 2 classes")
H.raises(function() xa.adamw{lr = -1} end, "need lr > 0")
H.raises(function() xa.adamw{betas = {0.9}} end, "betas = {beta1, beta2}")
H.raises(function() xa.sgd{nesterov = true} end, "nesterov needs momentum")
H.raises(function() xa.adamw{learning_rate = 1} end, "unknown option 'learning_rate'", "lr")
-- the frozen-prefix cache (on by default): epochs 2 and 3 read the blocks below the adapter from
-- it, although shuffling pads a row to other lengths each epoch, and the losses are those of a
-- run without it up to float rounding (a row's prefix is reused as computed at the length of its
-- first batch; GEMMs of another size may round differently); with base dropout it stays unused
local function top_model(cache)
  xa.seed(7)
  local mm = xa.model{plm = plm, prefix_cache = cache}
  mm:insert("bottleneck", {dim = 8, layers = {plm:info().layers - 1}})
  mm:head("cls", {kind = "classify", classes = 2, dropout = 0, pool = "mean"})
  return mm
end
local function run3(mm, extra)
  local o = {model = mm, data = data, head = "cls", epochs = 3, batch = 8, seed = 1,
             progress = false, optim = xa.adamw{lr = 1e-2}}
  for k, v in pairs(extra or {}) do o[k] = v end
  return xa.train(o)
end
local cached, plain = run3(top_model()), run3(top_model(false))
H.eq(cached.prefix_cache.misses, 6, "epoch 1: 6 batches computed the prefix")
H.eq(cached.prefix_cache.hits, 12, "epochs 2-3: every batch reads it")
H.check(cached.prefix_cache.mb > 0, "the cache holds the prefix")
H.eq(plain.prefix_cache.hits + plain.prefix_cache.misses, 0, "prefix_cache = false: off")
for i = 1, #plain.losses do
  H.near(cached.losses[i], plain.losses[i], 1e-6 * math.abs(plain.losses[i]),
         "step " .. i .. ": same loss with and without the cache")
end
local dropped = run3(top_model(), {dropout = 0.1})
H.eq(dropped.prefix_cache.hits, 0, "base dropout: the prefix is not exact, the cache is not used")
-- MLM training masks other positions every epoch: no row comes back, so none is kept
local masked = xa.train{model = top_model(), data = data, objective = "mlm", epochs = 3, batch = 8,
                        seed = 1, progress = false}
H.eq(masked.prefix_cache.hits + masked.prefix_cache.misses, 0, "mlm: the cache is not used")
H.eq(masked.prefix_cache.mb, 0, "mlm: nothing kept")
local off = run3(top_model(), {prefix_cache = false})
H.eq(off.prefix_cache.hits + off.prefix_cache.misses, 0, "xa.train{prefix_cache = false}")
H.raises(function() xa.model{plm = plm, prefix_cache = "big"} end, "prefix_cache must be a size in MB or false")

local o2 = xa.adamw{}
xa.train{model = m, data = data, head = "cls", max_steps = 1, optim = o2, progress = false}
H.raises(function()
  xa.train{model = model(), data = data, head = "cls", max_steps = 1, optim = o2, progress = false}
end, "already trains another model")

-- parameters made lazily (concat fusion) come from the script's RNG even when the first forward
-- is an evaluation, which runs under its own fixed seed: two scripts that differ only in the
-- seed before that evaluation get different fusions
local function fused_after_eval(seed)
  xa.seed(1)
  local mm = xa.model{plm = plm, fusion = "concat"}
  mm:insert("kadapter", {name = "fac", taps = {0, 1}, size = 8, heads = 2, layers = 1})
  mm:insert("kadapter", {name = "lin", taps = {1, 2}, size = 8, heads = 2, layers = 1})
  mm:head("cls", {kind = "classify", classes = 2})
  xa.seed(seed)
  xa.evaluate{model = mm, data = dev, head = "cls", metrics = {"loss"}}
  local path = ("%s/fused-%d.safetensors"):format(H.out, seed)
  assert(mm:save_adapters(path))
  return H.read(path)
end
H.check(fused_after_eval(100) ~= fused_after_eval(200), "the fusion follows the script's seed")

-- a function objective without xa.train's head picks heads itself: the batch still carries the
-- data's integer labels for step:loss("classify", {head = ...})
local mf = model()
local rf = xa.train{model = mf, data = data, max_steps = 2, batch = 8, progress = false,
                    objective = function(s) return s:loss("classify", {head = "cls"}) end}
H.eq(rf.steps, 2, "classify through step:loss's head")

-- metrics take class indices as numbers in 0..2^31-1 (no string "1", no silent truncation of
-- 2^32 + 1 to 1); Pearson does not depend on the scale
H.raises(function() xa.metrics.accuracy({4294967297}, {1}) end, "to 'accuracy'", "class indices")
H.raises(function() xa.metrics.accuracy({"1"}, {1}) end, "entry 1 is not")
H.near(xa.metrics.pearson({1e-200, 2e-200, 3e-200}, {1, 2, 3}), 1.0, 1e-12, "pearson at 1e-200")

H.done("train")
