-- xa.probe: zero-shot masked-word probing (MemoryColors-style): fill a template per example,
-- score the masked-LM logits at the mask over candidate words, and report accuracy and the
-- prediction of every example. A candidate that the tokenizer splits into several pieces is
-- scored by its first piece (reported in `multi_piece`).
local xa = require "xadapt"
local U = require "xadapt.util"
local T = require "xadapt.trainer"

local probe_keys = {"model", "data", "template", "words", "aliases", "label", "batch",
                    "features", "cache_dir", "max_length", "print"}

-- "[DESCRIPTOR]" -> ex.descriptor, "[ITEM]" -> ex.item, "[MASK]" -> the mask token; a name the
-- tokenizer has as a special token ("[SEP]" in MemoryColors' own template) stays as written.
local function fill(template, ex, mask, specials)
  local missing
  local text = template:gsub("%[([%w_]+)%]", function(name)
    if name == "MASK" then return mask end
    if specials["[" .. name .. "]"] then return "[" .. name .. "]" end
    local v = ex[name:lower()]
    if v == nil then
      missing = missing or name
      return ""
    end
    return tostring(v)
  end)
  text = text:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")
  return text, missing
end

function xa.probe(o)
  local fname = "xa.probe"
  U.check_opts(fname, o, probe_keys)
  local m = o.model
  if U.typeof(m) ~= "xadapt.Model" then U.raise("%s: model = xa.model{...} is required", fname) end
  if U.typeof(o.data) ~= "xadapt.Dataset" then U.raise("%s: data must be a dataset", fname) end
  U.check_type(fname, "template", o.template, "string")
  if not o.template:find("[MASK]", 1, true) then
    U.raise("%s: the template has no [MASK]", fname)
  end
  U.check_type(fname, "aliases", o.aliases, "table", true)
  local words, aliases = o.words, U.copy(o.aliases or {}) -- the caller's table stays as given
  if type(words) == "string" then
    local w, a = xa.data.words(words)
    if not w then U.raise("%s: words: %s", fname, a) end
    words = w
    for k, v in pairs(a) do aliases[k] = aliases[k] or v end
  end
  if type(words) ~= "table" or #words < 2 then
    U.raise("%s: words must be a list of 2 or more candidate words (or a word-list file)", fname)
  end
  local tok = m:tokenizer()
  if not tok then U.raise("%s: the PLM directory has no tokenizer files", fname) end
  local info = tok:info()
  if not info.mask_token then U.raise("%s: the tokenizer has no mask token", fname) end
  -- candidate ids: the first piece of " word" (a leading space makes RoBERTa's BPE see a word)
  -- Each candidate must be scored by a piece of its own: not the unknown token, not another
  -- candidate's first piece (both would tie, and the earlier word would always win).
  local ids, index, multi, by_id = {}, {}, {}, {}
  for i, w in ipairs(words) do
    if index[w] then U.raise("%s: the word '%s' is a candidate twice", fname, w) end
    local pieces = tok:encode(" " .. w, {no_special_tokens = true})
    if not pieces or #pieces == 0 then U.raise("%s: the word '%s' has no tokens", fname, w) end
    if info.unk_id and pieces[1] == info.unk_id then
      U.raise("%s: the word '%s' is not in the vocabulary (its first piece is the unknown token)",
              fname, w)
    end
    if by_id[pieces[1]] then
      U.raise("%s: the words '%s' and '%s' begin with the same piece (id %d), which alone is "
              .. "scored", fname, by_id[pieces[1]], w, pieces[1])
    end
    ids[i], index[w], by_id[pieces[1]] = pieces[1], i, w
    if #pieces > 1 then multi[#multi + 1] = w end
  end
  -- "[SEP]" and the like: a bracketed name the tokenizer reads as one of its special tokens
  local special_ids = {}
  for _, k in ipairs({"bos_id", "eos_id", "pad_id", "unk_id", "mask_id"}) do
    if info[k] then special_ids[info[k]] = true end
  end
  local specials = setmetatable({}, {__index = function(t, name)
    local p = tok:encode(name, {no_special_tokens = true})
    local yes = p ~= nil and #p == 1 and special_ids[p[1]] == true
    t[name] = yes
    return yes
  end})
  -- one synthetic example per data example
  local label_field = o.label or "label"
  local examples, skipped = {}, 0
  for _, ex in ipairs(o.data.examples) do
    local text, missing = fill(o.template, ex, info.mask_token, specials)
    if missing then
      U.raise("%s: %s: the template's [%s] has no field '%s' in the example", fname,
              ex._where or "example", missing, missing:lower())
    end
    local gold = ex[label_field]
    gold = gold ~= nil and (aliases[tostring(gold)] or tostring(gold)) or nil
    if gold == nil or not index[gold] then
      skipped = skipped + 1
    else
      examples[#examples + 1] = {text = text, gold = gold, source = ex, image = ex.image,
                                 images = ex.images}
    end
  end
  if #examples == 0 then U.raise("%s: no example has a label among the words", fname) end
  local data = xa.data.from(examples, "probe")
  local run = T.setup(fname, {model = m, objective = "mlm", features = o.features,
                              cache_dir = o.cache_dir, max_length = o.max_length}, data)
  run.mlm = nil -- the template's own mask, no random masking
  for i, ex in ipairs(examples) do -- truncation must not cut the mask off
    local has = false
    for _, id in ipairs(tok:encode(ex.text, {max_length = run.max_length}) or {}) do
      has = has or id == info.mask_id
    end
    if not has then
      U.raise("%s: %s: the filled template has %d tokens and max_length %d cuts its [MASK] off; "
              .. "raise max_length or shorten the template", fname,
              ex.source._where or ("example #%d"):format(i), #(tok:encode(ex.text) or {}),
              run.max_length)
    end
  end
  local bs = U.check_type(fname, "batch", o.batch or 32, "integer")
  local correct, preds = 0, {}
  for _, idx in ipairs(data:plan({batch = bs})) do
    local b = xa.batch(tok, data.examples, idx, {max_length = run.max_length,
                                                images = run.features.images})
    m:_forward(b, {train = false, features = run.features.cache, images = run.features.images,
                   texts = run.features.texts})
    local scores = m:_mask_scores(ids)
    for r, i in ipairs(idx) do
      local ex, best = examples[i], 1
      for k = 2, #words do
        if scores[r][k] > scores[r][best] then best = k end
      end
      local s = {}
      for k, w in ipairs(words) do s[w] = scores[r][k] end
      local p = {text = ex.text, label = ex.gold, predicted = words[best], scores = s,
                 correct = words[best] == ex.gold}
      for k, v in pairs(ex.source) do
        if type(v) ~= "table" and p[k] == nil then p[k] = v end
      end
      preds[i] = p
      if p.correct then correct = correct + 1 end
    end
  end
  m:_end()
  local res = {accuracy = correct / #examples, correct = correct, n = #examples, skipped = skipped,
               predictions = preds, words = words, multi_piece = multi}
  if o.print then
    print(("%s: accuracy %.4f (%d of %d)%s"):format(fname, res.accuracy, correct, #examples,
          skipped > 0 and (", %d skipped: label not among the words"):format(skipped) or ""))
  end
  return res
end

return {}
