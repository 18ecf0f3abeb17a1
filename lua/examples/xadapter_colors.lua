-- xadapter_colors.lua: X-adapter (Zhang et al. 2023) for visual commonsense. Stage 1 adapts
-- an X-adapter with masked language modelling on Flickr8k captions while its V-expert sees the
-- caption's image and its T-expert CLIP's features of the caption; stage 2 probes object colours
-- zero-shot (MemoryColors, the 12 ViComTe colour words) with experts v, t, both and none.
--
--   xadapt run lua/examples/xadapter_colors.lua [plm=DIR] [vlm=DIR] [shared=DIR] [out=DIR]
--       [n=200] [steps=30] [batch=16] [lr=1e-4] [layers=1] [dim=64] [pool=all]
--       [seed=1] [cache_dir=DIR] [save=adapters.safetensors]
--
-- Without plm=/vlm= it uses tiny random models with the real tokenizers (numbers are then
-- meaningless, but every step runs); with bert-base-uncased and clip-vit-base-patch32 it uses
-- the paper's models at small scale (raise n and steps). The adaptation data and objective
-- (MLM on Flickr8k captions) are this project's choice: the paper's are not known (methods.md
-- section 1).
local xa = require "xadapt"
local C = dofile((arg[0]:match("^(.*/)") or "./") .. "common.lua")

local plm, vlm = C.plm(), C.vlm()
local layers = plm:info().layers

-- Stage 1 data: captions with their images (a subset; n=5000 takes every caption).
local flickr = C.data("flickr8k_1k")
local captions = assert(xa.data.csv(flickr .. "/captions.txt", {
  text = "caption", image = "image", image_dir = flickr .. "/images", limit = arg.n or 200}))

local m = xa.model{plm = plm, vlm = vlm}
local top = {}
for i = math.max(0, layers - (arg.layers or 1)), layers - 1 do top[#top + 1] = i end
m:insert("xadapter", {layers = top, experts = {"v", "t"}, dim = arg.dim or 64, heads = 2})
m:freeze("plm.*") -- (always frozen; shown for clarity) only the X-adapter trains
m:summary(true)

xa.train{
  model = m, data = captions, objective = "mlm", mlm = 0.15,
  optim = xa.adamw{lr = arg.lr or 1e-4, weight_decay = 0.01},
  schedule = xa.schedule.linear{warmup = 0.1},
  max_steps = arg.steps or 30, batch = arg.batch or 16, seed = arg.seed or 1,
  features = {images = true, texts = true}, cache_dir = arg.cache_dir,
  log = C.out .. "/adapt.jsonl", name = "adapt",
}
if arg.save then assert(m:save_adapters(arg.save)) end

-- Stage 2: zero-shot colour probing. The V-expert gets the image closest to the probe's text
-- (CLIP retrieval from the adaptation images; pool=all searches all 1,000 Flickr8k images); the
-- T-expert CLIP's features of the text itself.
local colors = assert(xa.data.jsonl(C.data("memory_colors/memory_colors.jsonl")))
local words = C.data("vicomte/color-words.txt")
local template = "Q: What is the colour of [DESCRIPTOR] [ITEM]? A: It is [MASK]."
local rows = {}
for _, experts in ipairs({{"v"}, {"t"}, {"v", "t"}, "none"}) do
  m:activate("xadapter", experts)
  local r = xa.probe{model = m, data = colors, template = template, words = words,
                     features = {retrieve = {pool = arg.pool == "all" and flickr .. "/images"
                                                        or captions, k = 1}},
                     cache_dir = arg.cache_dir}
  rows[#rows + 1] = {m:active("xadapter"), ("%.3f"):format(r.accuracy), r.n}
end
C.table("MemoryColors zero-shot accuracy by active experts", {"experts", "accuracy", "items"}, rows)
print("xadapter_colors: OK")
