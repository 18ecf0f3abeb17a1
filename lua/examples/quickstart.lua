-- quickstart.lua: an X-adapter learns a task whose answer is only in the image.
--
--   xadapt run lua/examples/quickstart.lua [out=DIR] [classes=4] [epochs=...] [seed=1]
--
-- Needs nothing downloaded: it writes a tiny random BERT and a tiny random CLIP (real
-- architectures, random weights), K random image patterns as PNG files (each example is one
-- pattern plus noise; its label is the pattern's number), and a text that is the same for every
-- example. Only the V-expert (attending to CLIP's image features) can tell the classes apart:
-- accuracy rises from chance to near 100 % with it on, and falls back to chance when the script
-- switches it off. The script checks both and fails if either is wrong.
local xa = require "xadapt"

local out = arg.out or assert(xa.tempdir("xadapt-quickstart-"))
local K = arg.classes or 4
local per_class = arg.per_class or 24
local seed = arg.seed or 1
assert(xa.mkdir(out))
print(("xadapt %s quickstart: working in %s"):format(xa.version, out))

-- 1. Frozen models: tiny configs of the real architectures, random weights.
local words = {"the", "picture", "shows", "something", "what", "is", "it"}
local plm_dir = assert(xa.make_random{
  arch = "bert-tiny", out = out .. "/bert", seed = 1, vocab = words,
  config = {hidden_size = 32, intermediate_size = 64, num_attention_heads = 2,
            num_hidden_layers = 2, max_position_embeddings = 32},
})
local vlm_dir = assert(xa.make_random{
  arch = "clip-tiny", out = out .. "/clip", seed = 2,
  config = {projection_dim = 32,
            text_config = {hidden_size = 32, intermediate_size = 64, num_hidden_layers = 1,
                           projection_dim = 32},
            vision_config = {hidden_size = 32, intermediate_size = 64, num_hidden_layers = 2,
                             image_size = 32, patch_size = 8, projection_dim = 32}},
})

-- 2. Data: K random 32x32 patterns; every example is a noisy copy of one of them.
local function rng(s) -- a small seeded generator so the data does not depend on math.random
  local x = s
  return function()
    x = (x * 6364136223846793005 + 1442695040888963407)
    return ((x >> 33) & 0x7fffffff) / 0x80000000
  end
end
local rand = rng(seed * 7919 + 17)
local patterns = {}
for c = 1, K do
  local p = {}
  for i = 1, 32 * 32 * 3 do p[i] = math.floor(rand() * 256) end
  patterns[c] = p
end
assert(xa.mkdir(out .. "/images"))
local function make_set(name, n_per_class)
  local examples = {}
  for i = 1, n_per_class * K do
    local c = (i - 1) % K + 1
    local bytes = {}
    for j, v in ipairs(patterns[c]) do
      local noisy = v + math.floor((rand() - 0.5) * 60)
      bytes[j] = string.char(math.max(0, math.min(255, noisy)))
    end
    local path = ("%s/images/%s-%03d.png"):format(out, name, i)
    assert(xa.write_png(path, 32, 32, table.concat(bytes)))
    examples[i] = {text = "what is it the picture shows something", label = c - 1, image = path}
  end
  return xa.data.from(examples, name)
end
local train = make_set("train", per_class)
local dev = make_set("dev", per_class // 2)

-- 3. The network: the frozen PLM and VLM, an X-adapter with a V-expert in the last block, and
--    a classification head. Only the adapter and the head train.
local m = xa.model{plm = assert(xa.load_plm(plm_dir)), vlm = assert(xa.load_vlm(vlm_dir))}
m:insert("xadapter", {layers = {1}, experts = {"v"}, dim = 32, heads = 2, dropout = 0})
m:head("cls", {kind = "classify", classes = K, dropout = 0})
m:summary(true)

local function accuracy()
  return xa.evaluate{model = m, data = dev, head = "cls", metrics = {"accuracy"},
                     features = {texts = false}}.accuracy
end
local before = accuracy()
print(("accuracy before training: %.3f (chance %.3f)"):format(before, 1 / K))

-- 4. Train.
local r = xa.train{
  model = m, data = train, head = "cls", objective = "classify",
  optim = xa.adamw{lr = 3e-3, weight_decay = 0.0},
  schedule = xa.schedule.linear{warmup = 0.1},
  epochs = arg.epochs or 12, batch = 16, seed = seed,
  eval = {data = dev, every = arg.eval_every or 18, metrics = {"accuracy", "loss"}},
  features = {texts = false},
  log = out .. "/metrics.jsonl",
  name = "quickstart",
}

-- 5. With the V-expert on, then off.
local with_v = accuracy()
m:activate("xadapter", "none")
local without_v = accuracy()
m:activate("xadapter", {"v"})
print(("accuracy with the V-expert on: %.3f, off: %.3f (chance %.3f)"):format(with_v, without_v,
      1 / K))
print(("loss: first step %.4f, last step %.4f"):format(r.losses[1], r.loss))
print(("metrics: %s, loss curve: %s"):format(r.log, r.plot))

-- 6. The script checks its own result.
if with_v < 0.9 then
  error(("the V-expert should solve the task: accuracy %.3f < 0.9"):format(with_v))
end
if math.abs(without_v - 1 / K) > 0.1 then
  error(("with the V-expert off the answer is not in the input: accuracy %.3f should be "
         .. "chance (%.3f)"):format(without_v, 1 / K))
end
if not (r.loss < r.losses[1] * 0.5) then
  error(("the loss should fall: first %.4f, last %.4f"):format(r.losses[1], r.loss))
end
print("quickstart: OK")
