-- glue.lua: fine-tune on a GLUE task (SST-2 or RTE) with any adapter kind, on a frozen PLM.
--
--   xadapt run lua/examples/glue.lua task=sst2|rte adapter=bottleneck|lora|kadapter|xadapter|none
--       [plm=DIR] [vlm=DIR] [pool=500] [shared=DIR] [out=DIR] [n=512] [dev=256] [steps=60]
--       [epochs=] [batch=16] [lr=1e-3] [eval_every=20] [patience=3] [seed=1] [resume=true]
--
-- adapter=xadapter needs a VLM: the text-only GLUE examples get images retrieved from the
-- Flickr8k images by CLIP (V-expert) and CLIP's features of their text (T-expert). Checkpoints
-- go to out/<task>-<adapter>.ckpt every eval; resume=true continues from there after a crash.
local xa = require "xadapt"
local C = dofile((arg[0]:match("^(.*/)") or "./") .. "common.lua")

local task = arg.task or "sst2"
local kind = arg.adapter or "bottleneck"
local tasks = {
  sst2 = {dir = "glue_sst2", text = "sentence", metrics = {"accuracy", "f1", "loss"}},
  rte = {dir = "glue_rte", text = "sentence1", pair = "sentence2",
         metrics = {"accuracy", "matthews", "loss"}},
}
local t = tasks[task] or error(("task=%s: use sst2 or rte"):format(task))
local dir = C.data(t.dir)
local spec = {text = t.text, pair = t.pair, label = "label"}
local train = assert(xa.data.tsv(dir .. "/train.tsv", spec)):shuffle(arg.seed or 1):take(arg.n or 512)
local dev = assert(xa.data.tsv(dir .. "/dev.tsv", spec)):take(arg.dev or 256)

local plm = C.plm()
local L = plm:info().layers
local vlm = kind == "xadapter" and C.vlm() or nil
local m = xa.model{plm = plm, vlm = vlm, fusion = kind == "kadapter" and "concat" or "add"}
local features = false
if kind == "bottleneck" then
  m:insert("bottleneck", {reduction_factor = 16, placement = "houlsby"})
elseif kind == "lora" then
  m:insert("lora", {rank = 8, alpha = 16, targets = {"q", "v"}})
elseif kind == "kadapter" then
  m:insert("kadapter", {taps = {0, L // 2, L}, size = 64, heads = 2, layers = 2})
elseif kind == "xadapter" then
  m:insert("xadapter", {layers = {L - 1}, experts = {"v", "t"}, dim = 64, heads = 2})
  local flickr = C.data("flickr8k_1k")
  local pool = assert(xa.data.csv(flickr .. "/captions.txt", {text = "caption", image = "image",
    image_dir = flickr .. "/images", limit = arg.pool or 500}))
  features = {retrieve = {pool = pool, k = 1}}
elseif kind ~= "none" then
  error(("adapter=%s: use bottleneck, lora, kadapter, xadapter or none"):format(kind))
end
m:head(task, {kind = "classify", classes = 2, pool = "cls", dropout = 0.1})
m:summary(true)

local ckpt = ("%s/%s-%s.ckpt"):format(C.out, task, kind)
local r = xa.train{
  model = m, data = train, head = task, name = task .. "/" .. kind,
  optim = xa.adamw{lr = arg.lr or 1e-3, weight_decay = 0.01},
  schedule = xa.schedule.linear{warmup = 0.06},
  max_steps = arg.epochs and nil or (arg.steps or 60), epochs = arg.epochs,
  batch = arg.batch or 16, clip = 1.0, seed = arg.seed or 1, bucket = true,
  max_length = 128, features = features or nil,
  eval = {data = dev, every = arg.eval_every or 20, metrics = t.metrics},
  early_stop = {metric = "accuracy", patience = arg.patience or 3},
  checkpoint = {path = ckpt, every = arg.eval_every or 20},
  resume = arg.resume and ckpt or nil,
  log = ("%s/%s-%s.jsonl"):format(C.out, task, kind),
}
assert(m:save_adapters(("%s/%s-%s.safetensors"):format(C.out, task, kind)))
print(("%s with %s: dev accuracy %.3f (best %.3f at step %s), %d steps"):format(task, kind,
      r.final.accuracy, r.best or 0, tostring(r.best_step), r.steps))
print("glue: OK")
