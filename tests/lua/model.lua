-- Models: make_random, loading the frozen encoders, the network (insert, freeze, activate,
-- control, summary, parameters), heads, saving and loading adapters, and every error.
package.path = (arg[0]:match("^(.*/)") or "./") .. "?.lua;" .. package.path
local xa = require "xadapt"
local H = require "harness"

-- make_random: presets, overrides, vocab, and its errors
local bert = H.bert()
H.eq(xa.json.decode(H.read(bert .. "/config.json")).hidden_size, 32, "config override")
H.eq(select(2, H.read(bert .. "/vocab.txt"):gsub("\n", "")), 5 + #H.words, "vocab.txt lines")
H.raises(function() xa.make_random{arch = "bert-huge", out = H.out .. "/x"} end,
         "unknown preset 'bert-huge'", "bert-tiny")
H.raises(function() xa.make_random{arch = "bert-tiny"} end, "out = <directory> is required")
H.raises(function() xa.make_random{arch = "bert-tiny", out = "x", sead = 1} end,
         "unknown option 'sead'", "seed")
H.raises(function() xa.make_random{arch = "bert-tiny", out = "x", vocab = {"a b"}} end,
         "without white space")
H.raises(function()
  xa.make_random{arch = "bert-tiny", out = "x", vocab = {"a"}, config = {vocab_size = 3}}
end, "vocab_size 3 is smaller than the 6 tokens")
H.fails(function() return xa.make_random{arch = "bert-tiny", out = "/proc/no/such/dir"} end)
local raw = assert(xa.make_random{config_json = xa.json.encode{model_type = "bert",
  architectures = {"BertForMaskedLM"}, hidden_size = 16, intermediate_size = 32,
  num_attention_heads = 2, num_hidden_layers = 1, vocab_size = 40, max_position_embeddings = 16,
  type_vocab_size = 2, hidden_act = "gelu", layer_norm_eps = 1e-12, pad_token_id = 0},
  out = H.out .. "/raw"})
H.eq(raw, H.out .. "/raw", "config_json")
H.raises(function() xa.make_random{arch = "roberta-tiny", out = H.out .. "/rv", vocab = {"a"}} end,
         "only BERT reads", "tokenizer = directory")
H.raises(function() xa.make_random{arch = "bert-tiny", out = H.out .. "/typo", config = {hiden_size = 8}} end,
         "config: 'hiden_size' is not a key of this config", "hidden_size")
H.raises(function() xa.make_random{arch = "clip-tiny", out = H.out .. "/typo", config = {text = {hidden_size = 8}}} end,
         "config: 'text' is not a key", "text_config")
H.raises(function() xa.make_random{arch = "clip-tiny", out = H.out .. "/cv", config = {image_size = 32}} end,
         "CLIP's 'image_size' is a key of vision_config", "config = {vision_config = {image_size = ...}}")
-- writing another layout into the same folder leaves no stale weights to be loaded instead
local function fingerprint(dir) return assert(xa.load_plm(dir)):info().fingerprint end
local re = H.out .. "/rewrite"
assert(xa.make_random{arch = "bert-tiny", out = re, seed = 1})
assert(xa.make_random{arch = "bert-tiny", out = re, seed = 2, shards = 2})
H.eq(io.open(re .. "/model.safetensors"), nil, "the single file is gone")
local two = fingerprint(re)
assert(xa.make_random{arch = "bert-tiny", out = re, seed = 2})
H.eq(fingerprint(re), two, "seed 2 either way")
H.eq(io.open(re .. "/model.safetensors.index.json"), nil, "the index is gone")
H.eq(io.open(re .. "/model-00001-of-00002.safetensors"), nil, "the shards are gone")

-- loading: nil and a message for bad directories and the wrong kind
local plm = assert(xa.load_plm(bert))
local info = plm:info()
H.eq(info.arch, "bert", "arch")
H.eq(info.hidden, 32, "hidden")
H.eq(info.layers, 2, "layers")
H.eq(info.mlm_head, true, "mlm head")
H.eq(#info.fingerprint, 16, "fingerprint")
H.check(tostring(plm):find("xadapt.Encoder(bert", 1, true), "tostring")
H.fails(function() return xa.load_plm(H.out .. "/nothing-here") end, "nothing-here")
local clipdir = H.clip()
H.fails(function() return xa.load_plm(clipdir) end, "load it with xa.load_vlm")
H.fails(function() return xa.load_vlm(bert) end, "load it with xa.load_plm")
local vlm = assert(xa.load_vlm(clipdir))
H.eq(vlm:info().projection_dim, 16, "projection_dim")
H.raises(function() xa.load_plm() end, "bad argument #1 to 'load_plm'")

-- xa.model and its errors
H.raises(function() xa.model{} end, "plm = xa.load_plm(dir) is required")
H.raises(function() xa.model{plm = plm, fusoin = "add"} end, "unknown option 'fusoin'",
         "valid: plm, vlm, fusion, tokenizer")
H.raises(function() xa.model{plm = vlm} end, "the language model must be BERT or RoBERTa")
H.raises(function() xa.model{plm = plm, vlm = plm} end, "vlm must be a CLIP model")
H.raises(function() xa.model{plm = plm, fusion = "mul"} end, "fusion = 'mul'", "add, concat")
H.raises(function() xa.model{plm = "dir"} end, "plm must be a frozen model")
local m = xa.model{plm = plm, vlm = vlm}
H.check(m:tokenizer(), "the PLM's tokenizer")
local p2, v2 = m:encoders()
H.eq(p2, plm, "encoders plm")
H.eq(v2, vlm, "encoders vlm")

-- insert: unknown classes and options list the valid ones
H.raises(function() m:insert("xadaptr", {}) end, "unknown adapter 'xadaptr'", "xadapter", "lora")
H.raises(function() m:insert("xadapter", {dimm = 8}) end, "dimm", "dim")
H.raises(function() m:insert("xadapter", {layers = {7}}) end, "layer 7")
H.eq(m:insert("xadapter", {layers = {1}, dim = 8, heads = 2}), "xadapter", "instance name")
H.eq(m:insert("bottleneck", {name = "bn", dim = 4}), "bn", "named instance")
H.raises(function() m:insert("bottleneck", {name = "bn", dim = 4}) end, "already exists")
H.raises(function() m:insert("bottleneck", {name = "a.b"}) end, "without '.'")
local ads = m:adapters()
H.eq(#ads, 2, "adapters")
H.eq(ads[2].name, "bn", "adapter name")
H.eq(ads[2].class, "bottleneck", "adapter class")

-- freeze / unfreeze over parameter names
local n_all = #m:parameters()
H.check(n_all > 0, "parameters")
local n_bn = m:freeze("bn.*")
H.check(n_bn > 0, "freeze matched")
for _, p in ipairs(m:parameters("bn.*")) do H.eq(p.trainable, false, p.name) end
for _, p in ipairs(m:parameters("xadapter.*")) do H.eq(p.trainable, true, p.name) end
H.eq(m:unfreeze("bn.*"), n_bn, "unfreeze matched")
H.check(m:freeze("plm.*") >= 1, "the PLM is frozen already")
H.raises(function() m:unfreeze("plm.*") end, "frozen bases and stay frozen")
-- "*" freezes and unfreezes every adapter and head; the bases stay frozen
H.eq(m:freeze("*"), n_all + 1, "every parameter, and the bases counted as one")
for _, p in ipairs(m:parameters()) do H.eq(p.trainable, false, p.name) end
H.eq(m:unfreeze("*"), n_all + 1, "unfreeze everything there is to unfreeze")
for _, p in ipairs(m:parameters()) do H.eq(p.trainable, true, p.name) end
H.raises(function() m:freeze("xadaptr.*") end, "matches no parameter", "xadapter.*", "bn.*")
local mk = xa.model{plm = plm, fusion = "concat"}
mk:insert("kadapter", {name = "fac", taps = {0, 1}, size = 8, heads = 2, layers = 1})
H.raises(function() mk:freeze("fusion.*") end, "modules: plm.*, fac.*",
         "fusion's parameters are made at the first forward")

-- activate: sub-modules, "all", "none"; errors list the valid ones
H.eq(m:active("xadapter"), "v, t", "all active at first")
H.eq(m:activate("xadapter", {"v"}), "v", "activate v")
H.eq(m:activate("xadapter", "none"), "none", "activate none")
H.eq(m:activate("xadapter", "all"), "v, t", "activate all")
H.eq(m:activate("xadapter", "t"), "t", "activate one by name")
H.raises(function() m:activate("xadapter", {"x"}) end, "no sub-module 'x'", "v, t")
H.raises(function() m:activate("nope", "all") end, "no adapter named 'nope'", "xadapter, bn")
H.raises(function() m:active("nope") end, "no adapter named 'nope'")
H.raises(function() m:activate("xadapter", 3) end, "bad argument #2 to 'activate'")
local ok, msg = pcall(m.activate, m, "xadapter", 3) -- no call-site name: found as a method of m
H.check(not ok and msg:find("bad argument #2 to 'activate'", 1, true), "method named: %s", msg)
-- a class without sub-modules is on ("all") or off ("none") as a whole
-- an X-adapter built with the T-expert alone has no V-expert to switch on or list
local mt = xa.model{plm = plm, vlm = vlm}
mt:insert("xadapter", {name = "xt", experts = {"t"}, layers = {1}, dim = 8, heads = 2})
H.eq(mt:active("xt"), "t", "only the expert it was built with")
H.raises(function() mt:activate("xt", {"v"}) end, "xadapter 'xt' was inserted without sub-module 'v'",
         "\"experts\":[\"t\"]")
H.eq(mt:active("xt"), "t", "a refused activate changes nothing")
H.eq(mt:activate("xt", "none"), "none", "off")
H.eq(mt:activate("xt", "all"), "t", "all = the built ones")
H.raises(function() mt:activate("xt", {"x"}) end, "no sub-module 'x' (it has: t)")
H.eq(m:active("bn"), "all", "a bottleneck is on once inserted")
H.eq(m:activate("bn", "none"), "none", "switched off")
H.eq(m:adapters()[2].active, "none", "m:adapters() says so too")
H.eq(m:activate("bn", "all"), "all", "and on again")

-- control: LoRA merges; classes without commands refuse
local ml = xa.model{plm = plm}
ml:insert("lora", {rank = 2})
ml:control("lora", "merge")
ml:control("lora", "unmerge")
H.raises(function() ml:control("lora", "fold") end, "fold")
H.raises(function() m:control("bn", "merge") end, "takes no commands")

-- heads
local cls = m:head("cls", {kind = "classify", classes = 3, pool = "mean"})
H.eq(cls.kind, "classify", "head kind")
H.eq(cls.classes, 3, "head classes")
H.eq(cls.pool, "mean", "head pool")
H.eq(cls.model, m, "head model")
H.eq(m:heads().cls, cls, "heads by name")
H.raises(function() m:head("cls", {kind = "classify", classes = 3}) end, "exists already")
H.raises(function() m:head("x", {kind = "classifier", classes = 3}) end, "kind = 'classifier'",
         "classify, regress, choice, mlm, project")
H.raises(function() m:head("x", {kind = "classify"}) end, "classes = 2 or more")
H.raises(function() m:head("x", {kind = "choice"}) end, "choices = 2 or more")
H.raises(function() m:head("x", {kind = "classify", classes = 2, clases = 2}) end,
         "unknown option 'clases'")
H.raises(function() m:head("x", {kind = "project"}) end, "dim = its output size")
H.raises(function() m:head("x", {kind = "regress", classes = 3}) end,
         "m:head('x'): classes is for classify heads (this one is regress)")
H.raises(function() m:head("x", {kind = "classify", classes = 2, choices = 4}) end,
         "choices is for choice heads (this one is classify)")
H.raises(function() m:head("x", {kind = "choice", choices = 4, classes = 2}) end,
         "classes is for classify heads (this one is choice)")
H.raises(function() m:head("x", {kind = "regress", pool = "max"}) end, "pool = 'max'",
         "cls, pooler, mean")
m:head("reg", {kind = "regress"})
m:head("mlm", {kind = "mlm"})
m:head("proj", {kind = "project", dim = 16})
H.eq(m:heads().proj.dim, 16, "project dim")

-- summary: trainable vs frozen per module
local s = m:summary()
H.eq(s.modules[1].name, "plm", "summary plm row")
H.eq(s.modules[1].trainable, 0, "plm trains nothing")
H.eq(s.modules[1].frozen, info.params, "plm frozen count")
local by = {}
for _, row in ipairs(s.modules) do by[row.name] = row end
H.check(by.xadapter and by.xadapter.trainable > 0, "xadapter row")
H.check(by["head.cls"] and by["head.cls"].trainable == 32 * 3 + 3, "head row")
H.eq(s.total, s.trainable + s.frozen, "totals")
m:freeze("bn.*")
H.eq(m:summary().modules[4].frozen > 0, true, "frozen adapter counted as frozen")
m:unfreeze("bn.*")

-- save and load adapters (heads included); another base is refused unless forced
local path = H.out .. "/adapters.safetensors"
H.check(m:save_adapters(path), "save")
local m2 = xa.model{plm = plm, vlm = vlm}
m2:head("cls", {kind = "classify", classes = 3, pool = "mean"})
H.check(m2:load_adapters(path), "load")
H.eq(#m2:adapters(), 2, "adapters re-created from the file")
local a, b = m:parameters("bn.*"), m2:parameters("bn.*")
H.eq(#a, #b, "same parameters")
H.fails(function() return m2:load_adapters(H.out .. "/missing.safetensors") end, "missing")
H.raises(function() m2:load_adapters(path, {forse = true}) end, "unknown option 'forse'", "adapters_only")
local m4 = xa.model{plm = plm, vlm = vlm}
H.check(m4:load_adapters(path, {adapters_only = true}), "adapters only")
H.eq(#m4:adapters(), 2, "adapters_only still inserts the file's adapters")
local other = assert(xa.make_random{arch = "bert-tiny", out = H.out .. "/bert-other", seed = 9,
  vocab = H.words, config = {hidden_size = 32, intermediate_size = 64, num_attention_heads = 2,
                             num_hidden_layers = 2, max_position_embeddings = 64}})
local m3 = xa.model{plm = assert(xa.load_plm(other)), vlm = vlm}
H.fails(function() return m3:load_adapters(path) end, "refusing", "force = true")
H.check(m3:load_adapters(path, {force = true}), "forced load")
H.check(tostring(m):find("xadapt.Model", 1, true), "model tostring")

H.done("model")
