-- Data sets: readers (xa.data.jsonl, .tsv, .csv, .from), the field mapping that turns records
-- into examples (text, pair, label, images, choices), shuffling with seeded permutations, length
-- bucketing, and word lists (xa.data.words). Files are parsed in C (lua_data.c); batches
-- (padding, masks) are made in C by xa.batch from the tokenizer.
local xa = require "xadapt"
local U = require "xadapt.util"

local D = xa.data -- read_jsonl and read_table are already there (C)

local Dataset = {}
Dataset.__index = Dataset
Dataset.__name = "xadapt.Dataset"

function Dataset.__len(d) return #d.examples end
function Dataset.__tostring(d)
  return ("xadapt.Dataset(%s, %d examples)"):format(d.name or "?", #d.examples)
end

local function new_dataset(examples, name, spec)
  return setmetatable({examples = examples, name = name, spec = spec or {}, _lengths = {}}, Dataset)
end

local spec_keys = {"text", "pair", "label", "labels", "label_type", "image", "images",
                   "image_dir", "choices", "limit", "skip_bad"}

-- The value of field `key` (a name, or a column number for header-less tables).
local function field(rec, key)
  if key == nil then return nil end
  return rec[key]
end

local function to_label(v, spec, where)
  if v == nil then return nil end
  if spec.labels then
    for i, name in ipairs(spec.labels) do
      if v == name or tostring(v) == tostring(name) then return i - 1 end
    end
    error(("%s: label '%s' is not one of the labels given (%s)"):format(where, tostring(v),
          table.concat(spec.labels, ", ")), 0)
  end
  local kind = spec.label_type or "auto"
  local n = tonumber(v)
  if kind == "string" then return tostring(v) end
  if n == nil then
    if kind == "auto" then return v end -- kept as text (probing, lookups); batches refuse it
    error(("%s: label '%s' is not a number (give labels = {...} to map names to classes)")
          :format(where, tostring(v)), 0)
  end
  if kind == "float" then return n + 0.0 end
  if kind == "int" and math.tointeger(n) == nil then
    error(("%s: label '%s' is not an integer class index"):format(where, tostring(v)), 0)
  end
  return math.tointeger(n) or n
end

-- One record -> one example: every field kept, the canonical ones added; raises on a bad one.
local function example(rec, where, spec)
  local ex = {}
  for k, v in pairs(rec) do ex[k] = v end
  ex._where = where
  local text = field(rec, spec.text or "text")
  if text ~= nil then ex.text = tostring(text) end
  if spec.text and text == nil then
    error(("%s: no field '%s' for the text"):format(where, tostring(spec.text)), 0)
  end
  local pair = field(rec, spec.pair)
  if spec.pair then
    if pair == nil then
      error(("%s: no field '%s' for the pair"):format(where, tostring(spec.pair)), 0)
    end
    ex.pair = tostring(pair)
  end
  local label = field(rec, spec.label or "label")
  if spec.label and label == nil then
    error(("%s: no field '%s' for the label"):format(where, tostring(spec.label)), 0)
  end
  ex.label = to_label(label, spec, where)
  if spec.image then
    local img = field(rec, spec.image)
    if type(img) ~= "string" or img == "" then
      error(("%s: no image path in field '%s'"):format(where, tostring(spec.image)), 0)
    end
    ex.images = {U.join(spec.image_dir, img)}
  elseif spec.images then
    local list = field(rec, spec.images)
    if type(list) ~= "table" then
      error(("%s: field '%s' must be a list of image paths"):format(where, tostring(spec.images)), 0)
    end
    ex.images = {}
    for j, p in ipairs(list) do ex.images[j] = U.join(spec.image_dir, tostring(p)) end
  end
  if spec.choices then
    ex.choices = {}
    for j, col in ipairs(spec.choices) do
      local c = field(rec, col)
      if c == nil then
        error(("%s: no field '%s' for choice %d"):format(where, tostring(col), j), 0)
      end
      ex.choices[j] = tostring(c)
    end
  end
  return ex
end

-- Records -> examples. With skip_bad a record that cannot be an example (a missing field, a label
-- outside `labels`) is skipped and reported in `warnings`, like a malformed line.
local function build(records, lines, path, spec, warnings)
  local out = {}
  local limit = spec.limit
  for i, rec in ipairs(records) do
    if limit and #out >= limit then break end
    local where = ("%s:%d"):format(path, lines[i])
    if spec.skip_bad then
      local ok, ex = pcall(example, rec, where, spec)
      if ok then out[#out + 1] = ex else warnings[#warnings + 1] = ex end
    else
      out[#out + 1] = example(rec, where, spec)
    end
  end
  return out
end

local function check_spec(fname, spec)
  spec = U.check_opts(fname, spec, spec_keys, true)
  if spec.label_type then
    U.check_enum(fname, "label_type", spec.label_type, {"auto", "int", "float", "string"})
  end
  if spec.labels ~= nil and type(spec.labels) ~= "table" then
    U.raise("%s: labels must be a list of label names (index = class)", fname)
  end
  if spec.choices ~= nil and type(spec.choices) ~= "table" then
    U.raise("%s: choices must be a list of fields", fname)
  end
  if spec.image and spec.images then U.raise("%s: give image = or images =, not both", fname) end
  if spec.limit ~= nil and U.check_type(fname, "limit", spec.limit, "integer") < 0 then
    U.raise("%s: limit must be >= 0, got %d", fname, spec.limit)
  end
  return spec
end

local function finish(fname, path, spec, records, lines, warnings)
  if not records then return nil, lines end
  warnings = warnings or {}
  local ok, examples = pcall(build, records, lines, path, spec, warnings)
  if not ok then return nil, examples end
  local d = new_dataset(examples, path, spec)
  d.warnings = warnings
  if warnings and #warnings > 0 then
    io.stderr:write(("%s: skipped %d bad line%s (first: %s)\n"):format(fname, #warnings,
      #warnings == 1 and "" or "s", warnings[1]))
  end
  return d
end

-- xa.data.jsonl(path, {text=, pair=, label=, labels=, label_type=, image=, images=, image_dir=,
--                      choices=, limit=, skip_bad=}) -> Dataset | nil, msg
function D.jsonl(path, spec)
  U.check_type("xa.data.jsonl", "path", path, "string")
  spec = check_spec("xa.data.jsonl", spec)
  local recs, lines, warns = D.read_jsonl(path, {skip_bad = spec.skip_bad or false})
  return finish("xa.data.jsonl", path, spec, recs, lines, warns)
end

local function table_reader(fname, sep, quote)
  return function(path, spec)
    U.check_type(fname, "path", path, "string")
    local header = true
    if type(spec) == "table" and spec.header ~= nil then
      header = spec.header
      spec = U.copy(spec)
      spec.header = nil
    end
    spec = check_spec(fname, spec)
    local recs, lines, warns, names = D.read_table(path, {sep = sep, quote = quote,
      header = header, skip_bad = spec.skip_bad or false})
    if recs and header then -- every field named must be a column
      local have = {}
      for _, n in ipairs(names) do have[n] = true end
      for _, key in ipairs({"text", "pair", "label", "image", "images"}) do
        local col = spec[key]
        if col ~= nil and not have[col] then
          return nil, ("%s: no column '%s' for %s (columns: %s)"):format(path, tostring(col), key,
                       table.concat(names, ", "))
        end
      end
      if spec.text == nil and not have.text then
        return nil, ("%s: no column 'text' (columns: %s); give text = <column>"):format(path,
                     table.concat(names, ", "))
      end
    end
    local d, err = finish(fname, path, spec, recs, lines, warns)
    if d then d.columns = names end
    return d, err
  end
end

-- GLUE-style TSV: a header row, columns by name (or by number with header = false), no quoting.
D.tsv = table_reader("xa.data.tsv", "\t", false)
-- CSV with RFC 4180 quoting ("a, b" and "" inside quotes).
D.csv = table_reader("xa.data.csv", ",", true)

-- xa.data.from(list[, name]): examples made in the script ({text=, label=, images=, ...}).
function D.from(list, name)
  U.check_type("xa.data.from", "list", list, "table")
  local out = {}
  for i, ex in ipairs(list) do
    if type(ex) ~= "table" then U.raise("xa.data.from: example %d is not a table", i) end
    out[i] = ex
  end
  return new_dataset(out, name or "data")
end

-- xa.data.words(path) -> words, aliases: a word list, one per line; "alias: word" lines map
-- an alias to a word (ViComTe's color-words.txt).
function D.words(path)
  U.check_type("xa.data.words", "path", path, "string")
  local f, err = io.open(path, "r")
  if not f then return nil, err end
  local words, aliases = {}, {}
  local n = 0
  local _, rerr = f:read(0) -- a directory opens but cannot be read
  if rerr then
    f:close()
    return nil, ("%s: %s"):format(path, rerr)
  end
  for line in f:lines() do
    n = n + 1
    line = line:gsub("^%s+", ""):gsub("%s+$", "")
    if line ~= "" then
      local a, w = line:match("^(.-)%s*:%s*(.-)$")
      if a then
        if a == "" or w == "" then
          f:close()
          return nil, ("%s:%d: expected 'alias: word'"):format(path, n)
        end
        aliases[a] = w
      else
        words[#words + 1] = line
      end
    end
  end
  f:close()
  return words, aliases
end

-- --- Dataset methods ---------------------------------------------------------------------------

function Dataset:size() return #self.examples end

-- The first n examples (a new dataset sharing the examples).
function Dataset:take(n)
  U.check_type("d:take", "n", n, "integer")
  local out = {}
  for i = 1, math.min(n, #self.examples) do out[i] = self.examples[i] end
  return new_dataset(out, self.name, self.spec)
end

-- A seeded shuffle (a new dataset).
function Dataset:shuffle(seed)
  seed = U.check_type("d:shuffle", "seed", seed, "integer")
  local perm, out = xa.permutation(#self.examples, seed), {}
  for i, j in ipairs(perm) do out[i] = self.examples[j] end
  return new_dataset(out, self.name, self.spec)
end

-- Two datasets: the first `n` (or fraction n < 1) examples after a seeded shuffle, and the rest.
function Dataset:split(n, seed)
  if type(n) ~= "number" or not (n >= 0) then
    U.raise("d:split: n must be a count or a fraction (< 1) of the examples, got %s", tostring(n))
  end
  seed = U.check_type("d:split", "seed", seed, "integer", true)
  local d = seed and self:shuffle(seed) or self
  local k = n < 1 and math.floor(n * #d.examples + 0.5) or math.floor(n)
  local a, b = {}, {}
  for i, ex in ipairs(d.examples) do
    if i <= k then a[#a + 1] = ex else b[#b + 1] = ex end
  end
  return new_dataset(a, self.name, self.spec), new_dataset(b, self.name, self.spec)
end

function Dataset:map(fn)
  U.check_type("d:map", "fn", fn, "function")
  local out = {}
  for i, ex in ipairs(self.examples) do
    out[i] = fn(ex, i)
    if type(out[i]) ~= "table" then
      U.raise("d:map: the function must return an example (a table), got %s for example %d",
              type(out[i]), i)
    end
  end
  return new_dataset(out, self.name, self.spec)
end

function Dataset:filter(fn)
  U.check_type("d:filter", "fn", fn, "function")
  local out = {}
  for i, ex in ipairs(self.examples) do
    if fn(ex, i) then out[#out + 1] = ex end
  end
  return new_dataset(out, self.name, self.spec)
end

-- Token counts of every example with `tok` (cached per tokenizer), for bucketing.
function Dataset:lengths(tok, max_length)
  if U.typeof(tok) ~= "xadapt.Tokenizer" then
    U.raise("d:lengths: a tokenizer expected (m:tokenizer() or xa.tokenizer(dir)), got %s",
            U.typeof(tok))
  end
  local key = tostring(tok) .. "/" .. tostring(max_length or 0)
  if not self._lengths[key] then
    local lens, err = tok:lengths(self.examples, max_length or 0)
    if not lens then U.raise("%s", err) end
    self._lengths[key] = lens
  end
  return self._lengths[key]
end

-- The batches of one epoch as lists of example indices.
--   batch: examples per batch; seed: shuffle with this seed (nil = in order);
--   bucket: with a tokenizer, group examples of similar length (windows of 50 batches sorted by
--   length, batch order shuffled again) so padding wastes little.
function Dataset:plan(opts)
  U.check_opts("d:plan", opts, {"batch", "seed", "bucket", "tokenizer", "max_length", "drop_last"})
  local n, bs = #self.examples, U.check_positive("d:plan", "batch", opts.batch)
  local order
  U.check_type("d:plan", "seed", opts.seed, "integer", true)
  if opts.seed then order = xa.permutation(n, opts.seed) else
    order = {}
    for i = 1, n do order[i] = i end
  end
  if opts.bucket and opts.tokenizer and n > bs then
    local lens = self:lengths(opts.tokenizer, opts.max_length)
    local window = bs * 50
    local sorted = {}
    for start = 1, n, window do
      local chunk = {}
      for i = start, math.min(n, start + window - 1) do chunk[#chunk + 1] = order[i] end
      table.sort(chunk, function(a, b)
        if lens[a] ~= lens[b] then return lens[a] < lens[b] end
        return a < b
      end)
      for _, v in ipairs(chunk) do sorted[#sorted + 1] = v end
    end
    order = sorted
  end
  local batches = {}
  for start = 1, n, bs do
    local b = {}
    for i = start, math.min(n, start + bs - 1) do b[#b + 1] = order[i] end
    if not (opts.drop_last and #b < bs) then batches[#batches + 1] = b end
  end
  if opts.bucket and opts.tokenizer and opts.seed and #batches > 1 then
    local perm, shuffled = xa.permutation(#batches, opts.seed + 7919), {}
    for i, j in ipairs(perm) do shuffled[i] = batches[j] end
    batches = shuffled
  end
  return batches
end

-- Does the first example carry images?
function Dataset:has_images()
  local ex = self.examples[1]
  return ex ~= nil and (type(ex.images) == "table" and #ex.images > 0 or type(ex.image) == "string")
end

D.Dataset = Dataset
return D
