-- Zero-shot masked-word probing: templates, candidate words (first piece), accuracy and
-- per-item predictions, aliases, and MemoryColors with the real BERT vocabulary when shared/
-- is present.
package.path = (arg[0]:match("^(.*/)") or "./") .. "?.lua;" .. package.path
local xa = require "xadapt"
local H = require "harness"

local m = xa.model{plm = assert(xa.load_plm(H.bert()))}
local data = xa.data.from({
  {descriptor = "the", item = "sky", label = "blue"},
  {descriptor = "", item = "grass", label = "green"},
  {descriptor = "a", item = "sky", label = "crimson"}, -- an alias of red
  {descriptor = "the", item = "sky", label = "purple"}, -- not a candidate: skipped
})
local template = "Q: What is the colour of [DESCRIPTOR] [ITEM]? A: It is [MASK]."
local r = xa.probe{model = m, data = data, template = template,
                   words = {"red", "green", "blue", "yellow"}, aliases = {crimson = "red"}}
H.eq(r.n, 3, "probed examples")
H.eq(r.skipped, 1, "labels outside the words are skipped")
H.eq(#r.predictions, 3, "a prediction per example")
H.near(r.accuracy, r.correct / r.n, 1e-12, "accuracy")
local p = r.predictions[2]
H.eq(p.text, "Q: What is the colour of grass? A: It is [MASK].", "template filled, spaces collapsed")
H.eq(p.item, "grass", "the example's fields are kept")
H.eq(r.predictions[3].label, "red", "aliases map labels")
local best, bw = -math.huge, nil
for w, s in pairs(p.scores) do
  H.check(s <= 0, "scores are log-probabilities")
  if s > best then best, bw = s, w end
end
H.eq(p.predicted, bw, "the prediction is the best-scoring word")
-- probing is deterministic and does not train anything
local r2 = xa.probe{model = m, data = data, template = template,
                    words = {"red", "green", "blue", "yellow"}, aliases = {crimson = "red"}}
H.eq(r2.predictions[1].scores.blue, r.predictions[1].scores.blue, "deterministic")

-- errors
H.raises(function() xa.probe{model = m, data = data, template = "no mask", words = {"red", "blue"}} end,
         "the template has no [MASK]")
H.raises(function() xa.probe{model = m, data = data, template = "[COLOUR] [MASK]", words = {"red", "blue"}} end,
         "[COLOUR] has no field 'colour'")
H.raises(function() xa.probe{model = m, data = data, template = template, words = {"red"}} end,
         "2 or more candidate words")
H.raises(function() xa.probe{model = m, data = data, template = template, wrods = {}} end,
         "unknown option 'wrods'", "words")
H.raises(function() xa.probe{model = m, data = data, template = template, words = "/no/such/file"} end,
         "words:")
H.raises(function() xa.probe{model = m, data = data, template = template, words = {"red", "red"}} end,
         "'red' is a candidate twice")
H.raises(function()
  xa.probe{model = m, data = data, template = template, max_length = 6, words = {"red", "blue"}}
end, "max_length 6 cuts its [MASK] off")
-- the caller's aliases are not written into
local mine = {crimson = "red"}
xa.probe{model = m, data = data, template = template, words = {"red", "blue"}, aliases = mine}
local count = 0
for _ in pairs(mine) do count = count + 1 end
H.eq(count, 1, "aliases as given")

-- MemoryColors and ViComTe's colour words with the real bert-base-uncased vocabulary
if H.shared then
  local dir = assert(xa.make_random{arch = "bert-tiny", out = H.out .. "/bert-vocab", seed = 5,
                                    tokenizer = H.shared .. "/tokenizers/bert-base-uncased",
                                    config = {num_hidden_layers = 1}})
  local mc = xa.model{plm = assert(xa.load_plm(dir))}
  local colors = assert(xa.data.jsonl(H.shared .. "/data/memory_colors/memory_colors.jsonl"))
  local rc = xa.probe{model = mc, data = colors, template = template,
                      words = H.shared .. "/data/vicomte/color-words.txt", batch = 64}
  H.eq(rc.n + rc.skipped, #colors, "every MemoryColors item")
  H.check(rc.n >= 100, "most items have a ViComTe colour (%d)", rc.n)
  H.eq(#rc.words, 12, "12 colour words")
  -- words outside the vocabulary, and words sharing their scored first piece, are refused;
  -- MemoryColors' own template writes [SEP], which stays the separator
  H.raises(function() xa.probe{model = mc, data = colors, template = template, words = {"red", "☃"}} end,
           "'☃' is not in the vocabulary")
  H.raises(function()
    xa.probe{model = mc, data = colors, template = template, words = {"light green", "light blue"}}
  end, "begin with the same piece")
  local sep = xa.probe{model = mc, data = colors, words = {"red", "blue", "green"},
                       template = "Q: What is the color of [ITEM]? [SEP] A: It is [MASK]."}
  H.check(sep.predictions[1].text:find("? [SEP] A:", 1, true), "[SEP] kept: %s", sep.predictions[1].text)
  H.check(rc.accuracy >= 0 and rc.accuracy <= 1, "accuracy")
  H.eq(rc.predictions[1].item, "sunflower", "first item")
else
  print("probe: shared/ absent: skipping MemoryColors")
end

H.done("probe")
