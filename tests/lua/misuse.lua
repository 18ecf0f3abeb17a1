-- Misuse that used to crash or corrupt (found by fuzzing the Lua API under ASan): each is now
-- a clear error or works. Heap overflow in cross-entropy (a head on a batch of another choice
-- count), freed activations read by a backward after m:unfreeze, use after free through a __gc
-- called by hand, a merged LoRA left stale by a load, heads of another model, undefined
-- behaviour on empty models, and internal errors from values no check caught.
package.path = (arg[0]:match("^(.*/)") or "./") .. "?.lua;" .. package.path
local xa = require "xadapt"
local H = require "harness"

local plm = assert(xa.load_plm(H.bert()))
local data = xa.data.from({{text = "a b", label = 1}, {text = "c", label = 0}})

-- a head reads one row per example, a choice head `choices`: the batch must match
local m = xa.model{plm = plm}
m:head("cls", {kind = "classify", classes = 2})
m:head("two", {kind = "choice", choices = 2})
local choice = xa.data.from({{text = "a", choices = {"b", "c", "a"}, label = 1}})
local cb = xa.batch(m:tokenizer(), choice.examples, {1}, {labels = "int", choices = 3})
m:_forward(cb, {train = true})
H.raises(function() m:_loss("classify", {head = "cls"}) end,
         "head 'cls' reads one row per example; the batch has 3 choices per example")
H.raises(function() m:_loss("classify", {head = "two"}) end,
         "head 'two' is a choice head for 2 choices; the batch has 3 per example")
H.raises(function() m:_predict("cls") end, "reads one row per example")

-- what trains cannot change between a step's forward and its backward (the forward dropped the
-- activations a frozen weight's gradient would need); before the forward or after, it can
local mk = xa.model{plm = plm}
mk:insert("bottleneck", {dim = 4, layers = {0}})
mk:insert("kadapter", {size = 8, heads = 2, intermediate = 16, layers = 1, taps = {1}})
mk:head("cls", {kind = "classify", classes = 2})
local b = xa.batch(mk:tokenizer(), data.examples, {1, 2}, {labels = "int"})
mk:freeze("kadapter.*")
mk:_forward(b, {train = true})
local loss = mk:_loss("classify", {head = "cls"})
H.raises(function() mk:unfreeze("kadapter.*") end,
         "unfreeze: a step is between its forward and its backward")
H.raises(function() mk:freeze("bottleneck.*") end, "freeze: a step is between")
mk:_backward(loss)
H.check(mk:unfreeze("kadapter.*") > 0, "after the backward it may change")
-- a training step that fails (here: a label outside the head) is ended, so what trains may
-- change again afterwards
local bad = xa.data.from({{text = "a b", label = 5}})
H.raises(function() xa.train{model = mk, data = bad, head = "cls", max_steps = 1, progress = false} end,
         "label 5 is outside the head's 2 classes")
H.check(mk:freeze("bottleneck.*") > 0, "the failed step was ended")

-- scripts see a class's name, never its metatable (a __gc by hand freed live objects)
local h = m:heads().cls
for _, obj in ipairs({plm, m, h, m:tokenizer(), cb, xa.adamw{}}) do
  local mt = getmetatable(obj)
  H.check(type(mt) == "table" and mt.__gc == nil and type(mt.__name) == "string",
          "%s: the metatable is sealed", tostring(obj))
end

-- a merged LoRA holds B·A inside the projection: loading other values under it is refused
local ml = xa.model{plm = plm}
ml:insert("lora", {rank = 2})
ml:head("reg", {kind = "regress"})
assert(ml:save_adapters(H.out .. "/lora.safetensors"))
ml:control("lora", "merge")
H.fails(function() return ml:load_adapters(H.out .. "/lora.safetensors") end,
        "adapter 'lora' computes frozen projections itself (a merged LoRA", "unmerge")
ml:control("lora", "unmerge")
H.check(ml:load_adapters(H.out .. "/lora.safetensors"), "unmerged, it loads")

-- a Head object of another model is refused (it computed with that model's parameters)
local other = xa.model{plm = plm}
local foreign = other:head("cls", {kind = "classify", classes = 2})
local mb = xa.batch(m:tokenizer(), data.examples, {1, 2}, {labels = "int"})
m:_forward(mb, {train = true})
H.raises(function() m:_loss("classify", {head = foreign}) end, "head 'cls' belongs to another model")
H.raises(function() m:_predict(foreign) end, "belongs to another model")

-- a model without adapters or heads saves, and its optimizer checkpoints
local empty = xa.model{plm = plm}
H.check(empty:save_adapters(H.out .. "/empty.safetensors"), "an empty adapter file")
local o = xa.adamw{}
pcall(xa.train, {model = empty, data = data, objective = "mlm", max_steps = 1, optim = o,
                 progress = false})
H.check(xa.checkpoint_save(H.out .. "/empty.ckpt", empty, o), "an empty checkpoint")

-- values no check caught reached the library's internals
H.raises(function() data:plan{batch = math.huge} end, "d:plan: batch must be an integer, got inf")
H.raises(function() data:plan{batch = 2 ^ 63} end, "batch must be an integer")
H.raises(function() data:plan{batch = 1, seed = {}} end, "d:plan: seed must be an integer")
H.raises(function() data:split(0.5, 1e300) end, "d:split: seed must be an integer")
H.raises(function() data:lengths("x") end, "d:lengths: a tokenizer expected")
H.raises(function() data:map(function() return 5 end) end, "d:map: the function must return an example")
H.raises(function() xa.data.words(true) end, "xa.data.words: path must be a string")
local train = H.with(xa.train, {model = m, data = data, head = "cls", progress = false})
H.raises(train({epochs = false}), "xa.train: epochs must be an integer, got false")
H.raises(train({max_steps = false}), "max_steps must be an integer, got false")
H.raises(train({batch = 1e300}), "batch must be an integer")
H.raises(function() xa.evaluate{model = m, data = data, head = "cls", metrics = 5} end,
         "metrics must be a metric name or a list of them")
H.raises(function() xa.metrics.compute("accuracy", 1, {}) end, "predictions and gold must be lists")
H.raises(function() xa.plot(H.out .. "/p.svg", {{points = {{1}}}}) end,
         "xa.plot: series 1, point 1 must be {x, y}")
H.raises(function() xa.plot(H.out .. "/p.svg", {{points = {{1, 2}}}}, {width = 0.5}) end,
         "width must be an integer")
H.raises(function() xa.plot(H.out .. "/p.svg", {{points = {{1, 2}}}}, {width = 5}) end,
         "width must be at least 100 pixels")

H.done("misuse")
