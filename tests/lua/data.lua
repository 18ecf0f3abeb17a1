-- Data: the JSONL, TSV and CSV readers (field mapping, labels, bad lines with file:line),
-- dataset methods, bucketing, word lists, tokenizers and batches.
package.path = (arg[0]:match("^(.*/)") or "./") .. "?.lua;" .. package.path
local xa = require "xadapt"
local H = require "harness"

local dir = H.out .. "/data"
assert(xa.mkdir(dir))

-- JSONL: fields by name, labels mapped by a list, image paths joined with image_dir
local jl = H.write(dir .. "/a.jsonl", table.concat({
  '{"sentence": "a b c", "tag": "pos", "img": "x.png"}',
  '',
  '{"sentence": "d e", "tag": "neg", "img": "/abs/y.png"}',
  '{"sentence": "f", "tag": "pos", "img": "z.png", "extra": [1, 2]}',
}, "\n") .. "\n")
local d = assert(xa.data.jsonl(jl, {text = "sentence", label = "tag", labels = {"neg", "pos"},
                                    image = "img", image_dir = "/imgs"}))
H.eq(#d, 3, "examples")
H.eq(d.examples[1].text, "a b c", "text")
H.eq(d.examples[1].label, 1, "label mapped")
H.eq(d.examples[2].label, 0, "label mapped")
H.eq(d.examples[1].images[1], "/imgs/x.png", "image_dir joined")
H.eq(d.examples[2].images[1], "/abs/y.png", "absolute path kept")
H.eq(d.examples[3]._where, jl .. ":4", "line number (blank lines count)")
H.eq(d.examples[3].extra[2], 2, "other fields kept")
H.eq(#assert(xa.data.jsonl(jl, {text = "sentence", limit = 2})), 2, "limit")

-- bad lines are reported with file and line; skip_bad skips them
local bad = H.write(dir .. "/bad.jsonl", '{"text": "a"}\n{"text": "b"\n[1, 2]\n{"text": "c"} x\n')
H.fails(function() return xa.data.jsonl(bad) end, bad .. ":2: invalid JSON")
local kept = assert(xa.data.jsonl(bad, {skip_bad = true}))
H.eq(#kept, 1, "skip_bad keeps the good lines")
H.eq(#kept.warnings, 3, "skip_bad reports the bad ones")
H.check(kept.warnings[2]:find(":3: expected a JSON object", 1, true), kept.warnings[2])
H.check(kept.warnings[3]:find(":4: text after the JSON object", 1, true), kept.warnings[3])
H.fails(function() return xa.data.jsonl(dir .. "/missing.jsonl") end, "missing.jsonl")
-- a directory is not a data file: named, not "block too big"
H.fails(function() return xa.data.jsonl(dir) end, dir .. ": Is a directory")
H.fails(function() return xa.data.tsv(dir) end, dir .. ": Is a directory")
H.fails(function() return xa.data.words(dir) end, dir .. ": Is a directory")
H.fails(function() return xa.data.jsonl(jl, {text = "sentence", label = "tag", labels = {"neg"}}) end,
        jl .. ":1: label 'pos' is not one of the labels given")
-- skip_bad also skips well-formed lines that cannot be examples (here: a label outside labels)
local two = H.write(dir .. "/two.jsonl", '{"text": "a", "tag": "pos"}\n{"text": "b", "tag": "neg"}\n')
local negs = assert(xa.data.jsonl(two, {label = "tag", labels = {"neg"}, skip_bad = true}))
H.eq(#negs, 1, "the example whose label is not in labels is skipped")
H.check(negs.warnings[1]:find(":1: label 'pos' is not one of the labels", 1, true), negs.warnings[1])
H.fails(function() return xa.data.jsonl(jl, {text = "sentence", label = "tag", label_type = "int"}) end,
        ":1: label 'pos' is not a number")
H.fails(function() return xa.data.jsonl(jl, {text = "nope"}) end, ":1: no field 'nope'")
H.raises(function() xa.data.jsonl(jl, {txet = "sentence"}) end, "unknown option 'txet'",
         "valid: ", "text")
H.raises(function() xa.data.jsonl(jl, {label_type = "bool"}) end, "label_type = bool")

-- TSV (GLUE): header row, columns by name, numeric labels, no quoting
local tsv = H.write(dir .. "/a.tsv", 'sentence1\tsentence2\tlabel\n"a\tb\t1\nc d\te\t0\r\n\n')
local t = assert(xa.data.tsv(tsv, {text = "sentence1", pair = "sentence2"}))
H.eq(#t, 2, "tsv rows")
H.eq(t.examples[1].text, '"a', "no quoting in TSV")
H.eq(t.examples[1].label, 1, "numeric label")
H.eq(t.examples[2].pair, "e", "CRLF stripped")
H.eq(t.columns[2], "sentence2", "columns")
H.fails(function() return xa.data.tsv(tsv, {text = "sentence"}) end,
        "no column 'sentence' for text", "sentence1, sentence2, label")
local short = H.write(dir .. "/short.tsv", "text\tlabel\na\t1\nb\n")
H.fails(function() return xa.data.tsv(short) end, short .. ":3: expected 2 columns, found 1")
local noh = H.write(dir .. "/noh.tsv", "x y\t2.5\n")
local n = assert(xa.data.tsv(noh, {header = false, text = 1, label = 2, label_type = "float"}))
H.eq(n.examples[1].label, 2.5, "columns by number without a header")
H.eq(math.type(n.examples[1].label), "float", "float label")

-- CSV: RFC 4180 quoting, commas and newlines inside quotes
local csv = H.write(dir .. "/a.csv",
  'image,caption\nx.jpg,"A dog, a ball"\ny.jpg,plain text\nz.jpg,"two\nlines ""quoted"""\n')
local c = assert(xa.data.csv(csv, {text = "caption", image = "image", image_dir = dir}))
H.eq(#c, 3, "csv rows")
H.eq(c.examples[1].text, "A dog, a ball", "comma in quotes")
H.eq(c.examples[3].text, 'two\nlines "quoted"', "newline and quotes in quotes")
H.eq(c.examples[3]._where, csv .. ":4", "line of a record")
local open = H.write(dir .. "/open.csv", 'a,b\n1,"oops\n')
H.fails(function() return xa.data.csv(open, {text = "a"}) end, open .. ":2: a quoted field is not closed")

-- datasets: take, shuffle, split, map, filter, plan
local L = H.letters(30)
H.eq(#L:take(5), 5, "take")
local s1, s2 = L:shuffle(3), L:shuffle(3)
H.eq(s1.examples[7], s2.examples[7], "seeded shuffle")
local a, b = L:split(0.2, 1)
H.eq(#a, 6, "split fraction")
H.eq(#b, 24, "split rest")
H.eq(#L:filter(function(ex) return ex.label == 1 end) + #L:filter(function(ex) return ex.label == 0 end),
     30, "filter")
H.eq(L:map(function(ex) return {text = ex.text .. " x"} end).examples[1].text,
     L.examples[1].text .. " x", "map")
local plan = L:plan({batch = 8})
H.eq(#plan, 4, "batches")
H.eq(#plan[4], 6, "last batch")
H.eq(plan[1][1], 1, "in order without a seed")
local tok = assert(xa.tokenizer(H.bert()))
local bucketed = L:plan({batch = 4, seed = 1, bucket = true, tokenizer = tok})
local lens, seen = L:lengths(tok), {}
local spread = 0
for _, bb in ipairs(bucketed) do
  local lo, hi = math.huge, 0
  for _, i in ipairs(bb) do
    seen[i] = true
    lo, hi = math.min(lo, lens[i]), math.max(hi, lens[i])
  end
  spread = math.max(spread, hi - lo)
end
for i = 1, 30 do H.check(seen[i], "bucketing lost example %d", i) end
H.check(spread <= 1, "bucketed batches hold similar lengths (spread %d)", spread)

-- word lists
local words, aliases = xa.data.words(H.write(dir .. "/w.txt", "red\namber: orange\n\nblue\n"))
H.eq(#words, 2, "words")
H.eq(aliases.amber, "orange", "aliases")
H.fails(function() return xa.data.words(H.write(dir .. "/w2.txt", "x:\n")) end, ":1: expected 'alias: word'")

-- tokenizer
local info = tok:info()
H.eq(info.kind, "bert", "tokenizer kind")
H.eq(info.mask_token, "[MASK]", "mask token")
local ids = tok:encode("the sky is blue")
H.eq(ids[1], info.bos_id, "[CLS] first")
H.eq(ids[#ids], info.eos_id, "[SEP] last")
H.eq(tok:decode(ids, true), "the sky is blue", "decode")
H.eq(tok:id("sky"), ids[3], "id")
H.eq(tok:token(ids[3]), "sky", "token")
H.eq(tok:id("not-a-token"), nil, "unknown token")
H.eq(#tok:encode("a b c d e", {max_length = 4}), 4, "max_length")
H.raises(function() tok:encode("a", {max_len = 4}) end, "unknown option 'max_len'")
H.eq(#tok:encode("a b c d e", nil, {max_length = 4}), 4, "no pair, then the options")
H.eq(#tok:encode("a b c", "d e", {max_length = 4}), 4, "a pair, then the options")
H.raises(function() tok:encode("a", 5) end, "bad argument #2", "a pair text (string) or the options")
H.raises(function() tok:encode("a", "b", {}, {}) end, "bad argument #4")
H.fails(function() return xa.tokenizer(H.out) end)

-- batches: padding and masks from the tokenizer, labels, images
local bt = xa.batch(tok, {{text = "a b", label = 1}, {text = "a b c d", label = 0}}, {1, 2},
                    {labels = "int"})
H.eq(bt.rows, 2, "rows")
H.eq(bt.cols, 6, "padded to the longest")
H.eq(bt.mask[1][5], 0, "padding masked")
H.eq(bt.mask[2][6], 1, "tokens unmasked")
H.eq(bt.labels[1], 1, "labels")
H.raises(function() xa.batch(tok, {{label = 1}}, {1}) end, "example #1: no text")
H.raises(function() xa.batch(tok, {{text = "a", label = "x", _where = "f.jsonl:3"}}, {1}, {labels = "int"}) end,
         "f.jsonl:3: label must be a class index")
H.raises(function() xa.batch(tok, {{text = "a"}}, {1}, {images = true}) end, "no image")
H.raises(function() xa.batch(tok, {{text = "a"}}, {1}, {lables = "int"}) end, "unknown option 'lables'")
local ch = xa.batch(tok, {{text = "q", choices = {"a", "b", "c"}, label = 2}}, {1},
                    {choices = 3, labels = "int"})
H.eq(ch.rows, 3, "a row per choice")

H.done("data")
