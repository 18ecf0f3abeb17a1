-- kadapter.lua: K-Adapter (Wang et al. 2021). A factual adapter, a side network reading hidden
-- states of chosen PLM layers (it never writes back), learns object colours from ViComTe facts
-- with masked language modelling; its output is fused with the last hidden state (concat, as
-- K-Adapter). Then: zero-shot MemoryColors probing with and without the adapter, and SST-2
-- fine-tuning of a head with the adapter frozen.
--
--   xadapt run lua/examples/kadapter.lua [plm=DIR] [shared=DIR] [out=DIR] [facts=512]
--       [steps=40] [size=64] [lr=1e-3] [sst2=256] [dev=128] [ft_steps=30] [save=fac.safetensors]
local xa = require "xadapt"
local C = dofile((arg[0]:match("^(.*/)") or "./") .. "common.lua")

local plm = C.plm()
local L = plm:info().layers
local m = xa.model{plm = plm, fusion = "concat"}
-- taps: the embeddings, the middle and the last block (K-Adapter's released code taps 0, 11 and
-- 22 of RoBERTa-large's 24; this keeps the spread on any depth)
local taps = {0, L // 2, L}
m:insert("kadapter", {name = "fac", taps = taps, size = arg.size or 64, heads = 2, layers = 2,
                      intermediate = 4 * (arg.size or 64), dropout = 0.1})
m:summary(true)

-- Stage 1: facts "the colour of <object> is <colour>." with MLM.
local facts = assert(xa.data.jsonl(C.data("vicomte/color/train.jsonl"), {limit = arg.facts or 512}))
facts = facts:map(function(ex) return {text = ("the colour of %s is %s."):format(ex.sub, ex.obj)} end)
xa.train{model = m, data = facts, objective = "mlm", mlm = 0.15,
         optim = xa.adamw{lr = arg.lr or 1e-3}, schedule = xa.schedule.linear{warmup = 0.1},
         max_steps = arg.steps or 40, batch = 16, seed = 1,
         log = C.out .. "/facts.jsonl", name = "facts"}
if arg.save then assert(m:save_adapters(arg.save)) end

-- Stage 2: probing with the factual adapter and with the frozen PLM alone. (Switching 'fac' off
-- would not give the PLM back: under concat fusion its zeros still pass the trained projection.)
local colors = assert(xa.data.jsonl(C.data("memory_colors/memory_colors.jsonl")))
local words = C.data("vicomte/color-words.txt")
local template = "Q: What is the colour of [DESCRIPTOR] [ITEM]? A: It is [MASK]."
local on = xa.probe{model = m, data = colors, template = template, words = words}
local base = xa.probe{model = xa.model{plm = plm}, data = colors, template = template,
                      words = words}
C.table("MemoryColors zero-shot accuracy", {"model", "accuracy"},
        {{"PLM + fac", ("%.3f"):format(on.accuracy)}, {"PLM alone", ("%.3f"):format(base.accuracy)}})

-- Stage 3: SST-2 with the factual adapter frozen; the fusion layer and the head train.
local sst = C.data("glue_sst2")
local train = assert(xa.data.tsv(sst .. "/train.tsv", {text = "sentence", label = "label"}))
local dev = assert(xa.data.tsv(sst .. "/dev.tsv", {text = "sentence", label = "label"}))
train, dev = train:shuffle(1):take(arg.sst2 or 256), dev:take(arg.dev or 128)
m:freeze("fac.*")
m:head("sst2", {kind = "classify", classes = 2, pool = "cls"})
local r = xa.train{model = m, data = train, head = "sst2", optim = xa.adamw{lr = 1e-3},
                   max_steps = arg.ft_steps or 30, batch = 16, seed = 1, bucket = true,
                   eval = {data = dev, every = 10, metrics = {"accuracy", "f1", "loss"}},
                   log = C.out .. "/sst2.jsonl", name = "sst2"}
print(("SST-2 dev accuracy %.3f after %d steps (fac frozen)"):format(r.final.accuracy, r.steps))
print("kadapter: OK")
