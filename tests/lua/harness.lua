-- Shared by the Lua test scripts (run by tests/test_lua.c through `xadapt run`): assertions that
-- say what differed, error expectations, and tiny random models that build in milliseconds.
-- Scripts get out=<fresh temp dir>, src=<source root> and, when present, shared=<../shared>.
local xa = require "xadapt"

local H = {}

H.out = arg.out or assert(xa.tempdir("xadapt-lua-test-"))
H.src = arg.src or "."
H.shared = arg.shared -- nil when the shared data folder is absent
H.checks = 0

function H.check(cond, fmt, ...)
  H.checks = H.checks + 1
  if not cond then error((fmt or "check failed"):format(...), 2) end
end

function H.eq(got, want, what)
  H.checks = H.checks + 1
  if got ~= want then
    error(("%s: expected %s, got %s"):format(what or "value", tostring(want), tostring(got)), 2)
  end
end

function H.near(got, want, tol, what)
  H.checks = H.checks + 1
  if type(got) ~= "number" or math.abs(got - want) > tol then
    error(("%s: expected %.6g (+-%g), got %s"):format(what or "value", want, tol, tostring(got)), 2)
  end
end

-- fn must raise an error whose message contains every one of the plain strings given.
function H.raises(fn, ...)
  H.checks = H.checks + 1
  local ok, err = pcall(fn)
  if ok then error("expected an error, none was raised", 2) end
  err = tostring(err)
  for _, s in ipairs({...}) do
    if not err:find(s, 1, true) then
      error(("expected the error to mention '%s', got: %s"):format(s, err), 2)
    end
  end
  return err
end

-- fn must return nil and a message containing the strings given.
function H.fails(fn, ...)
  H.checks = H.checks + 1
  local v, msg = fn()
  if v ~= nil then error(("expected nil and a message, got %s"):format(tostring(v)), 2) end
  msg = tostring(msg)
  for _, s in ipairs({...}) do
    if not msg:find(s, 1, true) then
      error(("expected the message to mention '%s', got: %s"):format(s, msg), 2)
    end
  end
  return msg
end

function H.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

function H.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

H.words = {"a", "b", "c", "d", "e", "f", "g", "h", "red", "green", "blue", "yellow", "sky",
           "grass", "is", "the", "colour", "of", "it", "q", ":", "what", "?", "."}

-- A tiny BERT (2 layers, hidden 32) with a small vocabulary, written once per script.
local cache = {}
function H.bert(name)
  name = name or "bert"
  if not cache[name] then
    cache[name] = assert(xa.make_random{arch = "bert-tiny", out = H.out .. "/" .. name, seed = 3,
      vocab = H.words,
      config = {hidden_size = 32, intermediate_size = 64, num_attention_heads = 2,
                num_hidden_layers = 2, max_position_embeddings = 64}})
  end
  return cache[name]
end

-- A tiny CLIP (image 32, patch 8). Its text tower keeps CLIP's vocabulary size so the real
-- tokenizer files fit (copied from shared/tokenizers/clip when `with_tokenizer`).
function H.clip(with_tokenizer)
  local key = with_tokenizer and "clip-tok" or "clip"
  if not cache[key] then
    cache[key] = assert(xa.make_random{arch = "clip-tiny", out = H.out .. "/" .. key, seed = 4,
      tokenizer = with_tokenizer and (H.shared .. "/tokenizers/clip") or nil,
      config = {projection_dim = 16,
                text_config = {hidden_size = 32, intermediate_size = 64, num_hidden_layers = 1,
                               projection_dim = 16},
                vision_config = {hidden_size = 32, intermediate_size = 64, num_hidden_layers = 1,
                                 image_size = 32, patch_size = 8, projection_dim = 16}}})
  end
  return cache[key]
end

-- n random 32x32 PNG images; returns their paths.
function H.images(n, prefix)
  assert(xa.mkdir(H.out .. "/img"))
  local paths = {}
  for i = 1, n do
    local bytes = {}
    local x = i * 2654435761
    for j = 1, 32 * 32 * 3 do
      x = (x * 1103515245 + 12345) & 0x7fffffff
      bytes[j] = string.char((x >> 16) & 0xff)
    end
    paths[i] = ("%s/img/%s%d.png"):format(H.out, prefix or "i", i)
    assert(xa.write_png(paths[i], 32, 32, table.concat(bytes)))
  end
  return paths
end

-- Letter sentences; the label says whether the word "a" occurs.
function H.letters(n, seed)
  local ex = {}
  local x = seed or 1
  for i = 1, n do
    local w = {}
    for j = 1, 3 + i % 4 do
      x = (x * 1103515245 + 12345) & 0x7fffffff
      w[j] = H.words[(x >> 16) % 8 + 1]
    end
    local has = false
    for _, v in ipairs(w) do has = has or v == "a" end
    ex[i] = {text = table.concat(w, " "), label = has and 1 or 0}
  end
  return xa.data.from(ex, "letters")
end

-- A function(t) -> function() fn(base + t) end: calls of fn that differ in a few options.
function H.with(fn, base)
  return function(t)
    local o = {}
    for k, v in pairs(base) do o[k] = v end
    for k, v in pairs(t) do o[k] = v end
    return function() return fn(o) end
  end
end

function H.done(name)
  print(("%s: %d checks ok"):format(name, H.checks))
end

return H
