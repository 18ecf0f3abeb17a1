-- xa.train and xa.evaluate: the training loop around the C step (m:_forward, m:_loss,
-- m:_backward, opt:step): epochs or a step budget, gradient accumulation and clipping,
-- schedules, evaluation every N steps, early stopping, atomic checkpoints and exact resume,
-- CLIP features (cached, or retrieved from an image pool for text-only data), JSONL metrics, a
-- progress bar, an SVG loss curve and a summary table. Stages are successive calls.
local xa = require "xadapt"
local U = require "xadapt.util"
local S = require "xadapt.schedule"
local P = require "xadapt.progress"
local Plot = require "xadapt.plot"
local M = require "xadapt.metrics"

local T = {}

local EVAL_SEED = 0x5eed5eed -- evaluation masks the same tokens every time and leaves the RNG be

-- --- CLIP features ---------------------------------------------------------------------------

local caches = setmetatable({}, {__mode = "k"}) -- vlm -> cache_dir -> Features

local function feature_cache(vlm, dir)
  local per = caches[vlm]
  if not per then
    per = {}
    caches[vlm] = per
  end
  local key = dir or ""
  if not per[key] then
    local f, err = xa.features(vlm, {cache_dir = dir})
    if not f then U.raise("CLIP features: %s", err) end
    per[key] = f
  end
  return per[key]
end

local function pool_paths(fname, pool)
  if type(pool) == "string" then
    local names, err = xa.listdir(pool)
    if not names then U.raise("%s: retrieve.pool: %s", fname, err) end
    local out = {}
    for _, n in ipairs(names) do
      local ext = n:lower():match("%.(%w+)$")
      if ext == "jpg" or ext == "jpeg" or ext == "png" then out[#out + 1] = U.join(pool, n) end
    end
    table.sort(out)
    if #out == 0 then U.raise("%s: retrieve.pool: no .jpg/.png images in %s", fname, pool) end
    return out
  end
  if U.typeof(pool) == "xadapt.Dataset" then
    local seen, out = {}, {}
    for _, ex in ipairs(pool.examples) do
      for _, p in ipairs(ex.images or {ex.image}) do
        if not seen[p] then
          seen[p] = true
          out[#out + 1] = p
        end
      end
    end
    return out
  end
  if type(pool) == "table" and #pool > 0 then return pool end
  U.raise("%s: retrieve.pool must be a directory, a list of image paths or a dataset with images",
          fname)
end

-- Give every example without images of its own the k pool images closest to its text (CLIP
-- text-to-image cosine). The result is stored in the examples (ex.images, with ex._retrieved
-- saying from what), so it is computed once, and again when k, the pool or the VLM change.
local function retrieve(fname, cache, vlm, examples, spec)
  U.check_opts(fname .. ": features.retrieve", spec, {"pool", "k"})
  local k = U.check_positive(fname, "retrieve.k", spec.k or 1)
  local pool = pool_paths(fname, spec.pool)
  if k > #pool then
    U.raise("%s: features.retrieve.k = %d, but the pool has %d image%s", fname, k, #pool,
            #pool == 1 and "" or "s")
  end
  local from = table.concat({k, vlm:info().fingerprint, table.concat(pool, "\0")}, "\0")
  local pending, texts = {}, {}
  for _, ex in ipairs(examples) do
    if (not ex.images and not ex.image) or (ex._retrieved and ex._retrieved ~= from) then
      if type(ex.text) ~= "string" then U.raise("%s: retrieval needs ex.text", fname) end
      pending[#pending + 1] = ex
      texts[#texts + 1] = ex.text
    end
  end
  local chunk = 256
  for start = 1, #pending, chunk do
    local part = table.move(texts, start, math.min(#texts, start + chunk - 1), 1, {})
    local idx, err = cache:retrieve(pool, part, k)
    if not idx then U.raise("%s: features.retrieve: %s", fname, (err:gsub("^retrieval: ", ""))) end
    for i, row in ipairs(idx) do
      local imgs = {}
      for j, p in ipairs(row) do imgs[j] = pool[p] end
      pending[start + i - 1].images = imgs
      pending[start + i - 1]._retrieved = from
    end
  end
end

-- -> {cache=, images=, texts=} for a model and data set.
function T.features(fname, model, examples, has_images, spec, cache_dir)
  local _, vlm = model:encoders()
  if spec == false then return {images = false, texts = false} end
  spec = U.check_opts(fname .. ": features", spec, {"images", "texts", "retrieve"}, true)
  if not vlm then
    if spec.images or spec.texts or spec.retrieve or cache_dir then
      U.raise("%s: CLIP features%s need a VLM (xa.model{plm = ..., vlm = xa.load_vlm(dir)})",
              fname, cache_dir and " (cache_dir keeps them)" or "")
    end
    return {images = false, texts = false}
  end
  local r = {cache = feature_cache(vlm, cache_dir)}
  if spec.retrieve then
    retrieve(fname, r.cache, vlm, examples, spec.retrieve)
    has_images = true
  end
  r.images = spec.images
  if r.images == nil then r.images = has_images end
  r.texts = spec.texts
  if r.texts == nil then r.texts = true end
  if r.images and not has_images then
    U.raise("%s: the examples have no images (read them with image = <field>, or give "
            .. "features = {retrieve = {pool = <images>, k = 1}})", fname)
  end
  return r
end

-- --- one step --------------------------------------------------------------------------------

local objectives = {"classify", "regress", "mlm", "distill"}

-- The distillation student's head: the model's head "distill", made on first use with the
-- VLM's projection size.
local function distill_head(fname, m)
  local head = m:heads().distill
  if not head then
    local _, vlm = m:encoders()
    if not vlm then U.raise("%s: distillation needs a VLM teacher (xa.model{vlm = ...})", fname) end
    head = m:head("distill", {kind = "project", dim = vlm:info().projection_dim})
  end
  return head
end

-- The run's fixed parts: model, tokenizer, head, objective, batch options, features.
local function setup(fname, o, data)
  local m = o.model
  if U.typeof(m) ~= "xadapt.Model" then U.raise("%s: model = xa.model{...} is required", fname) end
  if U.typeof(data) ~= "xadapt.Dataset" then
    U.raise("%s: data must be a dataset (xa.data.jsonl / tsv / csv / from), got %s", fname,
            U.typeof(data))
  end
  if #data == 0 then U.raise("%s: the data set is empty", fname) end
  local tok = m:tokenizer()
  if not tok then
    U.raise("%s: the PLM directory has no tokenizer files; give xa.model{tokenizer = <dir>}", fname)
  end
  local run = {model = m, tok = tok, data = data}
  local obj = o.objective
  if obj == nil then
    obj = o.head and "classify" or nil
    if o.head then
      local h = type(o.head) == "string" and m:heads()[o.head] or o.head
      if U.typeof(h) == "xadapt.Head" and h.kind == "regress" then obj = "regress" end
    end
  end
  if obj == nil then U.raise("%s: objective = classify | regress | mlm | distill | function", fname) end
  if type(obj) ~= "function" then U.check_enum(fname, "objective", obj, objectives) end
  run.objective = obj
  if o.distill ~= nil and obj ~= "distill" and type(obj) ~= "function" then
    U.raise("%s: distill = {...} is for objective = \"distill\" (or a function objective that "
            .. "uses step:loss(\"distill\")), not %s", fname, obj)
  end
  local d = U.check_opts(fname .. ": distill", o.distill, {"loss", "temperature"}, true)
  if d.loss then U.check_enum(fname, "distill.loss", d.loss, {"mse", "cosine", "nst", "ntxent"}) end
  if d.temperature ~= nil and (type(d.temperature) ~= "number" or d.temperature <= 0) then
    U.raise("%s: distill.temperature must be a number > 0", fname)
  end
  run.distill = {loss = d.loss or "cosine", temperature = d.temperature or 0.07}
  -- the head
  local head = o.head
  if obj == "distill" and (o.features == false or type(o.features) == "table" and
                           o.features.texts == false) then
    U.raise("%s: distillation needs the teacher's text features (features.texts)", fname)
  end
  if obj == "distill" and head == nil then head = distill_head(fname, m) end
  -- a function objective distils with the head 'distill' (step:loss): it must exist before the
  -- optimizer binds and a checkpoint is read, so xa.train{distill = {...}} makes it here
  if type(obj) == "function" and o.distill ~= nil then distill_head(fname, m) end
  if type(head) == "string" then
    local h = m:heads()[head]
    if not h then
      U.raise("%s: the model has no head named '%s' (heads: %s)", fname, head,
              table.concat(U.sorted_keys(m:heads()), ", "))
    end
    head = h
  end
  if head ~= nil and U.typeof(head) ~= "xadapt.Head" then
    U.raise("%s: head must be a head of the model (m:head) or its name", fname)
  end
  if (obj == "classify" or obj == "regress") and not head then
    U.raise("%s: the %s objective needs head = <a %s head>", fname, obj, obj)
  end
  if head and head.model ~= m then U.raise("%s: the head belongs to another model", fname) end
  local kind = head and head.kind
  if obj == "classify" and kind ~= "classify" and kind ~= "choice" then
    U.raise("%s: the classify objective needs a classify or choice head, '%s' is %s", fname,
            head.name, kind)
  end
  if obj == "regress" and kind ~= "regress" then
    U.raise("%s: the regress objective needs a regress head, '%s' is %s", fname, head.name, kind)
  end
  if obj == "mlm" and head and kind ~= "mlm" then
    U.raise("%s: the mlm objective takes an mlm head or none, '%s' is %s", fname, head.name, kind)
  end
  if obj == "distill" and kind ~= "project" then
    U.raise("%s: distillation needs a project head, '%s' is %s", fname, head.name, kind)
  end
  run.head = head
  run.labels = (kind == "classify" or kind == "choice") and "int" or kind == "regress" and "float"
               or "none"
  -- a function objective without a head picks heads in step:loss: labels as the data has them
  if type(obj) == "function" and head == nil then
    local label = data.examples[1].label
    run.labels = math.type(label) == "integer" and "int" or math.type(label) == "float" and "float"
                 or "none"
  end
  run.choices = kind == "choice" and head.choices or nil
  -- masking and distillation options
  local mlm = o.mlm
  if type(mlm) == "table" then
    U.check_opts(fname .. ": mlm", mlm, {"prob"})
    mlm = mlm.prob
  end
  if mlm ~= nil and (type(mlm) ~= "number" or mlm <= 0 or mlm >= 1) then
    U.raise("%s: mlm must be a masking probability in (0, 1), got %s", fname, tostring(mlm))
  end
  if obj == "mlm" then mlm = mlm or 0.15 end
  run.mlm = mlm
  run.max_length = U.check_type(fname, "max_length", o.max_length or 128, "integer")
  if run.max_length < 1 then U.raise("%s: max_length must be >= 1, got %d", fname, run.max_length) end
  run.dropout = U.check_type(fname, "dropout", o.dropout or 0, "number")
  if not (run.dropout >= 0 and run.dropout < 1) then
    U.raise("%s: dropout must be in [0, 1), got %s", fname, tostring(run.dropout))
  end
  U.check_type(fname, "cache_dir", o.cache_dir, "string", true)
  run.features = T.features(fname, m, data.examples, data:has_images(), o.features, o.cache_dir)
  if obj == "distill" and not run.features.texts then
    U.raise("%s: distillation needs the teacher's text features (features.texts)", fname)
  end
  return run
end

-- The step object a function objective receives.
local Step = {}
Step.__index = Step
Step.__name = "xadapt.Step"

function Step:loss(kind, opts)
  local run = self.run
  U.check_enum("step:loss", "kind", kind, {"classify", "regress", "mlm", "distill"})
  opts = U.check_opts("step:loss", opts, {"head", "loss", "temperature"}, true)
  local o = {head = opts.head, loss = opts.loss, temperature = opts.temperature}
  if o.head == nil and run.head and kind ~= "mlm" then o.head = run.head end
  if kind == "distill" then
    o.loss = o.loss or run.distill.loss
    o.temperature = o.temperature or run.distill.temperature
    local h = opts.head
    if type(h) == "string" then h = run.model:heads()[h] end
    if opts.head ~= nil and (U.typeof(h) ~= "xadapt.Head" or h.kind ~= "project") then
      U.raise("step:loss('distill'): head %s is not a project head", tostring(opts.head))
    end
    if h == nil then -- the run's head when it is a project head, else the head 'distill'
      h = run.head and run.head.kind == "project" and run.head or run.model:heads().distill
    end
    if h == nil then
      U.raise("step:loss('distill'): no project head 'distill'; give xa.train distill = {...} "
              .. "(it makes one before training) or make it: m:head('distill', {kind = 'project', "
              .. "dim = <the VLM's projection size>})")
    end
    o.head = h
  end
  return run.model:_loss(kind, o)
end

local function batch_of(run, idx, with_labels)
  return xa.batch(run.tok, run.data.examples, idx, {
    max_length = run.max_length, labels = with_labels and run.labels or "none",
    images = run.features.images, choices = run.choices})
end

-- A training loss that is NaN or Inf stops the run before its backward, saying where it came from.
local function check_loss(m, v, state)
  if v == v and v ~= math.huge and v ~= -math.huge then return end
  local at = ("at step %d (epoch %d)"):format(state.step + 1, state.epoch)
  v = v ~= v and "NaN" or v > 0 and "+Inf" or "-Inf"
  local bad = m:_nonfinite()
  if bad then
    U.raise("the training loss is %s %s: parameters hold NaN or Inf (%s); if updates put them "
            .. "there, lower the learning rate or clip", v, at, bad)
  end
  if state.step == 0 then
    U.raise("the training loss is %s %s, before any update of this run: this batch's forward "
            .. "made it; check its inputs and labels and any adapter plugin's forward", v, at)
  end
  U.raise("the training loss is %s %s, every trainable parameter finite: %d update%s may have made "
          .. "them too large (lower the learning rate or clip), or this batch's inputs or labels "
          .. "or an adapter plugin's forward made it", v, at, state.step, state.step == 1 and "" or "s")
end

-- Forward one batch and return (batch, Loss).
local function forward_loss(run, idx, train)
  local b = batch_of(run, idx, true)
  run.model:_forward(b, {train = train, features = run.features.cache,
                         images = run.features.images, texts = run.features.texts,
                         mlm = run.mlm, dropout = train and run.dropout or 0})
  local obj, m = run.objective, run.model
  local loss
  if obj == "classify" or obj == "regress" then
    loss = m:_loss(obj, {head = run.head})
  elseif obj == "mlm" then
    loss = m:_loss("mlm", {head = run.head})
  elseif obj == "distill" then
    loss = m:_loss("distill", {head = run.head, loss = run.distill.loss,
                               temperature = run.distill.temperature})
  else
    loss = obj(setmetatable({run = run, model = m, batch = b, train = train}, Step))
    if U.typeof(loss) ~= "xadapt.Loss" then
      U.raise("the objective function must return a loss (step:loss(...) and sums of them), got %s",
              U.typeof(loss))
    end
  end
  return b, loss
end

-- --- evaluation ------------------------------------------------------------------------------

local function default_metrics(run)
  if run.objective == "classify" then return {"accuracy", "loss"} end
  if run.objective == "regress" then return {"pearson", "spearman", "loss"} end
  return {"loss"}
end

local function metric_kind(run)
  if run.labels == "int" then return "classify" end
  if run.labels == "float" then return "regress" end
  return "loss"
end

-- Evaluate `run` on its data: {metric = value, ..., n = examples}.
local function evaluate(run, metrics, batch)
  local m = run.model
  m:_prepare() -- lazy parameters (concat fusion) come from the script's RNG, not EVAL_SEED's
  local rng = xa.rng_state()
  xa.seed(EVAL_SEED)
  local want_preds = false
  for _, name in ipairs(metrics) do want_preds = want_preds or name ~= "loss" end
  local preds, golds, loss_sum, n = {}, {}, 0, 0
  for _, idx in ipairs(run.data:plan({batch = batch})) do
    local b, loss = forward_loss(run, idx, false)
    loss_sum = loss_sum + loss:value() * b.size
    n = n + b.size
    if want_preds then
      local p, g = m:_predict(run.head), b.labels
      for i = 1, #p do
        preds[#preds + 1] = p[i]
        golds[#golds + 1] = g[i]
      end
    end
  end
  m:_end()
  xa.rng_state(rng)
  local res = {n = n}
  for _, name in ipairs(metrics) do
    if name == "loss" then res.loss = loss_sum / n else res[name] = M.compute(name, preds, golds) end
  end
  return res
end

local function check_metrics(fname, run, metrics)
  metrics = metrics or default_metrics(run)
  if type(metrics) == "string" then metrics = {metrics} end
  if type(metrics) ~= "table" then
    U.raise("%s: metrics must be a metric name or a list of them, got %s", fname, type(metrics))
  end
  for _, name in ipairs(metrics) do M.check(fname, name, metric_kind(run)) end
  return metrics
end

local eval_keys = {"model", "data", "objective", "head", "metrics", "batch", "features",
                   "cache_dir", "max_length", "mlm", "distill"}

-- xa.evaluate{model=, data=, objective=, head=, metrics=, batch=, features=, ...} -> results
function xa.evaluate(o)
  U.check_opts("xa.evaluate", o, eval_keys)
  local batch = U.check_positive("xa.evaluate", "batch", o.batch or 32)
  local run = setup("xa.evaluate", o, o.data)
  local metrics = check_metrics("xa.evaluate", run, o.metrics)
  return evaluate(run, metrics, batch)
end

-- --- logging ---------------------------------------------------------------------------------

local function format_metrics(res)
  local parts = {}
  for _, k in ipairs(U.sorted_keys(res)) do
    if k ~= "n" and k ~= "type" and k ~= "step" and k ~= "epoch" then
      parts[#parts + 1] = ("%s %.4f"):format(k, res[k])
    end
  end
  return table.concat(parts, ", ")
end

-- Open the JSONL log; on resume keep only the lines up to the resumed step (and return the
-- training losses and eval results found there, for the curve).
local function open_log(path, resumed_step)
  local losses, evals = {}, {}
  if not path then return nil, losses, evals end
  local keep = {}
  if resumed_step then
    local f = io.open(path, "r")
    if f then
      for line in f:lines() do
        local e = xa.json.decode(line)
        if type(e) == "table" and (e.step == nil or e.step <= resumed_step) then
          keep[#keep + 1] = line
          if e.type == "train" then losses[#losses + 1] = {e.step, e.loss} end
          if e.type == "eval" then evals[#evals + 1] = e end
        end
      end
      f:close()
    end
  end
  local f, err = io.open(path, "w")
  if not f then U.raise("xa.train: log: %s", err) end
  for _, line in ipairs(keep) do f:write(line, "\n") end
  f:flush()
  return f, losses, evals
end

local function log(f, entry)
  if f then
    f:write(xa.json.encode(entry), "\n")
    f:flush()
  end
end

local function plot_path(o)
  if o.plot == false then return nil end
  if type(o.plot) == "string" then return o.plot end
  if type(o.log) == "string" then return (o.log:gsub("%.jsonl$", "")) .. ".svg" end
  return nil
end

local function write_plot(path, losses, evals, title)
  if not path then return end
  local series = {{name = "train loss", points = losses}}
  local ev = {}
  for _, e in ipairs(evals) do
    if e.loss then ev[#ev + 1] = {e.step, e.loss} end
  end
  if #ev > 0 then series[2] = {name = "eval loss", points = ev, markers = true} end
  local ok, err = xa.plot(path, series, {title = (title and title .. ": " or "") .. "loss",
                                         xlabel = "step", ylabel = "loss"})
  if not ok then io.stderr:write("xa.train: plot: ", tostring(err), "\n") end
end

-- --- training --------------------------------------------------------------------------------

local train_keys = {"model", "data", "objective", "head", "optim", "schedule", "epochs",
                    "max_steps", "batch", "accumulate", "clip", "eval", "early_stop",
                    "checkpoint", "resume", "seed", "log", "plot", "features", "cache_dir",
                    "max_length", "mlm", "distill", "dropout", "progress", "on_step", "name",
                    "shuffle", "bucket", "summary", "prefix_cache"}

local function ckpt_path(pattern, step)
  return (pattern:gsub("{step}", tostring(step)))
end

local function better(mode, a, b)
  if b == nil then return true end
  if mode == "max" then return a > b end
  return a < b
end

-- xa.train{...} -> result (see docs/lua-api.md)
function xa.train(o)
  local fname = "xa.train"
  U.check_opts(fname, o, train_keys)
  local run = setup(fname, o, o.data)
  local m, data = run.model, run.data
  local batch = U.check_positive(fname, "batch", o.batch or 16)
  local accumulate = U.check_positive(fname, "accumulate", o.accumulate or 1)
  for _, key in ipairs({"shuffle", "bucket", "progress", "summary"}) do
    U.check_type(fname, key, o[key], "boolean", true)
  end
  U.check_type(fname, "log", o.log, "string", true)
  U.check_type(fname, "name", o.name, "string", true)
  U.check_type(fname, "on_step", o.on_step, "function", true)
  if o.plot ~= nil and o.plot ~= false and type(o.plot) ~= "string" then
    U.raise("%s: plot must be a path or false, got %s", fname, tostring(o.plot))
  end
  local clip = o.clip or 0
  if type(clip) ~= "number" or clip < 0 then U.raise("%s: clip must be a number >= 0", fname) end
  local optim = o.optim or xa.adamw{}
  if U.typeof(optim) ~= "xadapt.Optim" then
    U.raise("%s: optim must be xa.adamw{...} or xa.sgd{...}, got %s", fname, U.typeof(optim))
  end
  local schedule = o.schedule
  if schedule ~= nil and type(schedule) ~= "function" and U.typeof(schedule) ~= "xadapt.Schedule" then
    U.raise("%s: schedule must be xa.schedule.<name>{...} or a function(step, total)", fname)
  end
  if o.epochs == nil and o.max_steps == nil then o = U.copy(o); o.epochs = 1 end
  local epochs = o.epochs ~= nil and U.check_positive(fname, "epochs", o.epochs) or nil
  local max_steps = o.max_steps ~= nil and U.check_positive(fname, "max_steps", o.max_steps) or nil
  local nbatches = (#data + batch - 1) // batch
  local per_epoch = (nbatches + accumulate - 1) // accumulate
  local total = epochs and epochs * per_epoch or max_steps
  if max_steps then total = math.min(total, max_steps) end
  local shuffle = o.shuffle ~= false
  local bucket = o.bucket == true

  -- evaluation, early stopping, checkpoints
  local ev = o.eval and U.check_opts(fname .. ": eval", o.eval, {"data", "every", "metrics", "batch"})
  local eval_run, metrics, eval_every, eval_batch
  if ev then
    if U.typeof(ev.data) ~= "xadapt.Dataset" then U.raise("%s: eval.data must be a dataset", fname) end
    eval_run = setup(fname .. ": eval", {model = m, objective = run.objective, head = run.head,
      features = o.features, cache_dir = o.cache_dir, max_length = o.max_length, mlm = o.mlm,
      distill = o.distill}, ev.data)
    metrics = check_metrics(fname .. ": eval", run, ev.metrics)
    eval_every = ev.every and U.check_positive(fname, "eval.every", ev.every)
    eval_batch = U.check_positive(fname, "eval.batch", ev.batch or batch * 2)
  end
  local es = o.early_stop and U.copy(U.check_opts(fname .. ": early_stop", o.early_stop,
                                                  {"metric", "patience", "mode"}))
  if es then
    if not ev then U.raise("%s: early_stop needs eval = {data = ...}", fname) end
    es.metric = es.metric or metrics[1]
    local found = false
    for _, name in ipairs(metrics) do found = found or name == es.metric end
    if not found then
      U.raise("%s: early_stop.metric '%s' is not one of the eval metrics (%s)", fname,
              tostring(es.metric), table.concat(metrics, ", "))
    end
    es.mode = es.mode or (M.higher_is_better(es.metric) and "max" or "min")
    U.check_enum(fname, "early_stop.mode", es.mode, {"max", "min"})
    es.patience = U.check_positive(fname, "early_stop.patience", es.patience or 3)
  end
  local ck = o.checkpoint and U.copy(U.check_opts(fname .. ": checkpoint", o.checkpoint,
                                                  {"path", "every"}))
  if ck then
    U.check_type(fname, "checkpoint.path", ck.path, "string")
    ck.every = ck.every and U.check_positive(fname, "checkpoint.every", ck.every)
  end

  -- seeds: the context's RNG (dropout, masking, new parameters) and the data order
  local seed = o.seed and U.check_type(fname, "seed", o.seed, "integer")
  U.check_type(fname, "resume", o.resume, "string", true)
  -- the frozen-prefix cache (on by default in xa.model; used only while exact: no base dropout)
  if o.prefix_cache ~= nil then o.model:prefix_cache(o.prefix_cache) end
  local prefix_before = o.model:prefix_cache()
  if seed then xa.seed(seed) end
  local state = {step = 0, epoch = 1, next_batch = 1, bad = 0, shuffle_seed = seed or 1234}

  -- Parameters some networks create on their first forward (concat fusion) must exist before
  -- the optimizer state and a checkpoint are loaded.
  m:_prepare()
  optim:_bind(m)
  optim:zero_grad()

  local resumed
  if o.resume then
    U.check_type(fname, "resume", o.resume, "string")
    local fh = io.open(o.resume, "rb")
    if fh then
      fh:close()
      local st, err = xa.checkpoint_load(o.resume, m, optim)
      if not st then U.raise("%s: resume: %s", fname, err) end
      for k, v in pairs(st) do state[k] = v end
      -- written as text: JSON numbers read back as doubles, exact only up to 2^53
      state.shuffle_seed = math.tointeger(tonumber(state.shuffle_seed)) or state.shuffle_seed
      resumed = state.step
    elseif o.progress ~= false then
      print(("%s: no checkpoint at %s: starting from step 0"):format(fname, o.resume))
    end
  end

  local logf, losses, evals = open_log(o.log, resumed)
  if not resumed then
    log(logf, {type = "run", name = o.name, objective = type(run.objective) == "string" and
               run.objective or "function", total_steps = total, batch = batch,
               accumulate = accumulate, examples = #data, seed = seed})
  end
  local plot = plot_path(o)
  local progress = P.new({total = total, start = state.step, enabled = o.progress ~= false,
                          label = o.name or "train"})
  if resumed then progress:note(("resumed from %s at step %d"):format(o.resume, resumed)) end

  local stopped = "finished"
  -- A run resumed at a step it had evaluated (a finished run resumed again) keeps that
  -- evaluation: from its log when there is one, else computed again without counting it twice
  -- toward early stopping.
  local evaluated = resumed and state.last_eval_step == state.step
  local last_eval = evaluated and evals[#evals] and evals[#evals].step == state.step and
                    evals[#evals] or nil
  local function do_eval()
    local res = evaluate(eval_run, metrics, eval_batch)
    res.type, res.step, res.epoch = "eval", state.step, state.epoch
    last_eval = res
    state.last_eval_step = state.step
    if evaluated then return end -- the same numbers again (evaluation is deterministic)
    log(logf, res)
    evals[#evals + 1] = res
    progress:note(("eval at step %d: %s"):format(state.step, format_metrics(res)))
    if es then
      local v = res[es.metric]
      if better(es.mode, v, state.best) then
        state.best, state.best_step, state.bad = v, state.step, 0
      else
        state.bad = state.bad + 1
        if state.bad >= es.patience then
          stopped = ("early stop: no better %s for %d evaluations"):format(es.metric, es.patience)
        end
      end
    end
    write_plot(plot, losses, evals, o.name)
  end
  local function do_checkpoint()
    local path = ckpt_path(ck.path, state.step)
    local saved = U.copy(state)
    saved.shuffle_seed = tostring(state.shuffle_seed)
    local ok, err = xa.checkpoint_save(path, m, optim, xa.json.encode(saved))
    if not ok then U.raise("%s: checkpoint: %s", fname, err) end
    state.last_checkpoint, state.last_checkpoint_step = path, state.step
  end

  local t0 = xa.clock()
  while state.step < total and stopped == "finished" do
    local plan = data:plan({batch = batch, seed = shuffle and (state.shuffle_seed + state.epoch) or nil,
                            bucket = bucket, tokenizer = run.tok, max_length = run.max_length})
    local bi = state.next_batch
    while bi <= #plan and state.step < total and stopped == "finished" do
      local group_end = math.min(#plan, bi + accumulate - 1)
      local loss_sum, count, examples = 0, 0, 0
      for j = bi, group_end do
        -- a failing step (a bad label, an objective's error) is ended before the error goes on,
        -- so the model is usable again (freeze, another xa.train)
        local ok, b, loss = pcall(function()
          local b, loss = forward_loss(run, plan[j], true)
          check_loss(m, loss:value(), state)
          m:_backward(loss)
          return b, loss
        end)
        if not ok then
          m:_end()
          error(b, 0)
        end
        loss_sum = loss_sum + loss:value()
        count = count + 1
        examples = examples + b.size
      end
      m:_end()
      local lr = optim.lr * S.value(schedule, state.step, total)
      local norm = optim:step(lr, 1 / count, clip)
      state.step = state.step + 1
      state.next_batch = group_end + 1
      bi = group_end + 1
      local loss = loss_sum / count
      losses[#losses + 1] = {state.step, loss}
      local elapsed = xa.clock() - t0
      progress:update({step = state.step, loss = loss, lr = lr, examples = examples})
      log(logf, {type = "train", step = state.step, epoch = state.epoch, loss = loss, lr = lr,
                 grad_norm = norm, examples = examples, time = elapsed})
      local epoch_end = bi > #plan
      evaluated = false
      if ev and (eval_every and state.step % eval_every == 0 or not eval_every and epoch_end) then
        do_eval()
      end
      -- the epoch advances before a checkpoint, so resuming at an epoch end starts the next one
      if epoch_end then state.epoch, state.next_batch = state.epoch + 1, 1 end
      if ck and ck.every and state.step % ck.every == 0 then do_checkpoint() end
      if o.on_step then
        local r = o.on_step({step = state.step, epoch = state.epoch - (epoch_end and 1 or 0),
                             loss = loss, lr = lr, grad_norm = norm, total = total,
                             eval = last_eval})
        if r == false then stopped = "stopped by on_step" end
      end
    end
  end
  if ev and (not last_eval or last_eval.step ~= state.step) then do_eval() end
  if ck and state.last_checkpoint_step ~= state.step then do_checkpoint() end
  local elapsed = progress:finish()
  if logf then logf:close() end
  write_plot(plot, losses, evals, o.name)

  local result = {steps = state.step, epochs = state.epoch - (state.next_batch > 1 and 0 or 1),
                  losses = {}, evals = evals, stopped = stopped, time = elapsed,
                  best = state.best, best_step = state.best_step, final = last_eval,
                  checkpoint = state.last_checkpoint, log = o.log, plot = plot}
  for i, p in ipairs(losses) do result.losses[i] = p[2] end
  result.loss = result.losses[#result.losses]
  local prefix = o.model:prefix_cache()
  result.prefix_cache = {hits = prefix.hits - prefix_before.hits,
                         misses = prefix.misses - prefix_before.misses, mb = prefix.mb}
  if o.summary ~= false and o.progress ~= false then T.summary(result, o, run, progress) end
  return result
end

function T.summary(r, o, run, progress)
  local rows = {}
  local first, last, min, min_step = r.losses[1], r.loss, math.huge, 0
  for i, v in ipairs(r.losses) do
    if v < min then min, min_step = v, i end
  end
  local name = type(run.objective) == "string" and run.objective or "custom"
  rows[#rows + 1] = {"objective", name .. (run.head and (" (head " .. run.head.name .. ")") or "")}
  rows[#rows + 1] = {"steps", ("%d (%s)"):format(r.steps, r.stopped)}
  rows[#rows + 1] = {"time", ("%s, %.1f examples/s"):format(U.duration(r.time),
                     r.time > 0 and progress.examples / r.time or 0)}
  if first then
    rows[#rows + 1] = {"loss", ("first %.4f, last %.4f, min %.4f (step %d)"):format(first, last,
                       min, min_step)}
  end
  if r.final then rows[#rows + 1] = {"eval", format_metrics(r.final)} end
  if r.best then
    rows[#rows + 1] = {"best", ("%.4f at step %d"):format(r.best, r.best_step)}
  end
  local files = {}
  if r.log then files[#files + 1] = "log " .. r.log end
  if r.plot then files[#files + 1] = "plot " .. r.plot end
  if r.checkpoint then files[#files + 1] = "checkpoint " .. r.checkpoint end
  if #files > 0 then rows[#rows + 1] = {"files", table.concat(files, ", ")} end
  P.table(("summary%s"):format(o.name and (" of " .. o.name) or ""), rows)
end

T.setup = setup
T.forward_loss = forward_loss
return T
