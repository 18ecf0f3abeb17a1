-- CLIP features: image features from PNG files for the V-expert, text features for the
-- T-expert (needs the CLIP tokenizer from shared/), retrieval from an image pool for
-- text-only data, the disk cache, and distillation from the frozen VLM's text features.
package.path = (arg[0]:match("^(.*/)") or "./") .. "?.lua;" .. package.path
local xa = require "xadapt"
local H = require "harness"

local plm = assert(xa.load_plm(H.bert()))
local vlm = assert(xa.load_vlm(H.clip(H.shared ~= nil)))
local imgs = H.images(6)

-- image features: the V-expert sees the image; the cache computes each image once
local ex = {}
for i = 1, 12 do ex[i] = {text = "what is it", label = (i - 1) % 3, image = imgs[(i - 1) % 6 + 1]} end
local data = xa.data.from(ex)
xa.seed(1)
local m = xa.model{plm = plm, vlm = vlm}
m:insert("xadapter", {layers = {1}, experts = {"v"}, dim = 16, heads = 2, dropout = 0})
m:head("cls", {kind = "classify", classes = 3, dropout = 0})
local cache_dir = H.out .. "/cache"
local r = xa.train{model = m, data = data, head = "cls", optim = xa.adamw{lr = 1e-2}, epochs = 25,
                   batch = 6, progress = false, features = {texts = false}, cache_dir = cache_dir}
H.check(r.loss < 0.5 * r.losses[1], "the V-expert learns from images (%g -> %g)", r.losses[1], r.loss)
local f = xa.features(vlm, {cache_dir = cache_dir})
H.check(f, "a feature cache")
H.raises(function() xa.features(plm) end, "a CLIP model")
H.raises(function() xa.features(vlm, {dir = "x"}) end, "unknown option 'dir'", "cache_dir")
local m2 = xa.model{plm = plm, vlm = vlm}
m2:insert("xadapter", {layers = {1}, experts = {"v"}, dim = 16, heads = 2})
m2:head("cls", {kind = "classify", classes = 3})
-- the V-expert on without images is an error that says how to fix it
H.raises(function()
  xa.train{model = m2, data = H.letters(4), head = "cls", max_steps = 1, progress = false,
           features = {texts = false, images = false}}
end, "no CLIP image features")
H.raises(function()
  xa.train{model = m2, data = H.letters(4), head = "cls", max_steps = 1, progress = false,
           features = {images = true}}
end, "the examples have no images")
H.raises(function()
  xa.train{model = m2, data = data, head = "cls", max_steps = 1, progress = false,
           features = {imges = true}}
end, "unknown option 'imges'", "images, retrieve, texts")
-- a missing image file is reported by path
local broken = xa.data.from({{text = "x", label = 0, image = H.out .. "/nope.png"}})
H.raises(function()
  xa.train{model = m2, data = broken, head = "cls", max_steps = 1, progress = false,
           features = {texts = false}}
end, "nope.png")

-- retrieval: text-only examples get the k closest pool images
local texts = xa.data.from({{text = "a b", label = 0}, {text = "c d", label = 1},
                            {text = "e f", label = 2}})
local mr = xa.model{plm = plm, vlm = vlm}
mr:insert("xadapter", {layers = {1}, experts = {"v"}, dim = 16, heads = 2})
mr:head("cls", {kind = "classify", classes = 3})
if H.shared then -- retrieval embeds texts with CLIP's text tower: needs its tokenizer
  xa.train{model = mr, data = texts, head = "cls", max_steps = 2, progress = false,
           features = {texts = false, retrieve = {pool = H.out .. "/img", k = 2}}}
  for _, e in ipairs(texts.examples) do
    H.eq(#e.images, 2, "k retrieved images")
    H.check(e.images[1] ~= e.images[2], "distinct images")
  end
  -- another k on the same data set retrieves again (the stored images were for k = 2)
  xa.evaluate{model = mr, data = texts, head = "cls",
              features = {texts = false, retrieve = {pool = H.out .. "/img", k = 3}}}
  for _, e in ipairs(texts.examples) do H.eq(#e.images, 3, "retrieved again for k = 3") end
  H.raises(function()
    xa.evaluate{model = mr, data = texts, head = "cls",
                features = {texts = false, retrieve = {pool = H.out .. "/img", k = 9}}}
  end, "xa.evaluate: features.retrieve.k = 9, but the pool has 6 images")
  -- the same file twice in a list pool is one candidate
  local twice = {imgs[1], imgs[1], imgs[2]}
  H.raises(function()
    xa.evaluate{model = mr, data = texts, head = "cls",
                features = {texts = false, retrieve = {pool = twice, k = 3}}}
  end, "features.retrieve: k = 3, but the pool has 2 distinct images (of 3)")
  local idx = f:retrieve(imgs, {"a b", "c d"}, 3)
  H.eq(#idx, 2, "retrieve rows")
  H.eq(#idx[1], 3, "retrieve k")
  H.raises(function() f:retrieve(imgs, {"a"}, 7) end, "k must be 1..6")
  H.raises(function() f:retrieve({}, {"a"}, 1) end, "the image pool is empty")

  -- the T-expert attends to CLIP text features of the same text
  local mt = xa.model{plm = plm, vlm = vlm}
  mt:insert("xadapter", {layers = {1}, experts = {"t"}, dim = 16, heads = 2})
  mt:head("cls", {kind = "classify", classes = 2})
  local rt = xa.train{model = mt, data = H.letters(16), head = "cls", max_steps = 3, batch = 8,
                      progress = false}
  H.eq(rt.steps, 3, "T-expert trains")

  -- distillation from the VLM's text features, every loss
  for _, loss in ipairs({"mse", "cosine", "nst", "ntxent"}) do
    local md = xa.model{plm = plm, vlm = vlm}
    md:insert("bottleneck", {dim = 8})
    local rd = xa.train{model = md, data = H.letters(32), objective = "distill",
                        distill = {loss = loss, temperature = 0.1}, optim = xa.adamw{lr = 1e-2},
                        epochs = 8, batch = 8, progress = false}
    H.check(rd.loss < rd.losses[1], "%s distillation loss falls (%g -> %g)", loss, rd.losses[1],
            rd.loss)
    H.eq(md:heads().distill.dim, 16, "the student projects to CLIP's size")
  end
  local md = xa.model{plm = plm, vlm = vlm}
  H.raises(function()
    xa.train{model = md, data = H.letters(8), objective = "distill", distill = {loss = "kl"},
             progress = false}
  end, "distill.loss = kl", "mse, cosine, nst, ntxent")
  H.raises(function()
    xa.train{model = md, data = H.letters(8), objective = "distill", features = {texts = false},
             progress = false}
  end, "needs the teacher's text features")
  -- a function objective can mix MLM and distillation; distill = {...} makes the student's head
  -- before training (so the optimizer and checkpoints have it), without it step:loss says so
  local mx = xa.model{plm = plm, vlm = vlm}
  mx:insert("bottleneck", {dim = 8})
  local function mlm_and_distill(s) return s:loss("mlm") + s:loss("distill") end
  H.raises(function()
    xa.train{model = mx, data = H.letters(16), mlm = 0.15, max_steps = 1, batch = 8,
             progress = false, objective = mlm_and_distill}
  end, "no project head 'distill'", "distill = {...}")
  local mix = xa.train{model = mx, data = H.letters(16), mlm = 0.15, max_steps = 2, batch = 8,
                       progress = false, objective = mlm_and_distill, distill = {loss = "cosine"}}
  H.eq(mix.steps, 2, "mixed objective")
  H.eq(mx:heads().distill.kind, "project", "the student's head")
  H.raises(function()
    xa.train{model = mx, data = H.letters(16), max_steps = 1, batch = 8, progress = false,
             objective = function(s) return s:loss("distill", {head = "nope"}) end}
  end, "head nope is not a project head")
  -- a project head's dropout applies while training: the first loss (before any update) then
  -- depends on the run's seed, and without dropout it does not
  local function first_loss(dropout, seed)
    xa.seed(5)
    local ms = xa.model{plm = plm, vlm = vlm}
    ms:head("distill", {kind = "project", dim = 16, dropout = dropout})
    return xa.train{model = ms, data = H.letters(8), objective = "distill", max_steps = 1,
                    batch = 8, shuffle = false, seed = seed, progress = false}.losses[1]
  end
  H.check(first_loss(0.5, 1) ~= first_loss(0.5, 2), "the project head's dropout is drawn")
  H.eq(first_loss(0, 1), first_loss(0, 2), "and without it the seed changes nothing")
  H.eq(md:heads().distill, nil, "a refused run leaves no head behind")
else
  print("features: shared/ absent: skipping text features, retrieval and distillation")
  H.raises(function()
    xa.train{model = mr, data = texts, head = "cls", max_steps = 1, progress = false,
             features = {texts = false, retrieve = {pool = H.out .. "/img", k = 1}}}
  end, "tokenizer")
end
local st = f:stats()
H.check(st.computed + st.memory_hits + st.disk_hits >= 0, "stats")

H.done("features")
