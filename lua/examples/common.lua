-- Shared by the examples: where the shared data is, and frozen models — the directories given
-- as plm=DIR / vlm=DIR, or tiny random-weight models of the real architectures with the real
-- tokenizer files (written once into out=DIR) when none are given.
local xa = require "xadapt"

local C = {}

C.here = arg[0]:match("^(.*/)") or "./"
C.shared = arg.shared or (C.here .. "../../../shared")
C.out = arg.out or assert(xa.tempdir("xadapt-example-"))
assert(xa.mkdir(C.out))

function C.data(rel)
  local path = C.shared .. "/data/" .. rel
  if not io.open(path, "r") and not xa.listdir(path) then
    error(("%s is missing: give shared=<the shared folder> (with data/ and tokenizers/)"):format(path))
  end
  return path
end

-- The PLM: arg.plm, or a random bert-tiny (or roberta-tiny with arch=roberta) with the real
-- bert-base-uncased (roberta-base) tokenizer.
function C.plm()
  if arg.plm then return assert(xa.load_plm(arg.plm)) end
  local roberta = arg.arch == "roberta"
  local dir = C.out .. (roberta and "/roberta-random" or "/bert-random")
  local tok = C.shared .. "/tokenizers/" .. (roberta and "roberta-base" or "bert-base-uncased")
  if not io.open(dir .. "/config.json", "r") then
    assert(xa.make_random{arch = roberta and "roberta-tiny" or "bert-tiny", out = dir, seed = 1,
                          tokenizer = tok})
  end
  return assert(xa.load_plm(dir))
end

-- The VLM: arg.vlm, or a random clip-tiny with the CLIP tokenizer derived from OpenAI's BPE file.
function C.vlm()
  if arg.vlm then return assert(xa.load_vlm(arg.vlm)) end
  local dir = C.out .. "/clip-random"
  if not io.open(dir .. "/config.json", "r") then
    assert(xa.make_random{arch = "clip-tiny", out = dir, seed = 2,
                          tokenizer = C.shared .. "/tokenizers/clip"})
  end
  return assert(xa.load_vlm(dir))
end

-- A table of results as aligned text.
function C.table(title, header, rows)
  print(title)
  local w = {}
  for i, h in ipairs(header) do w[i] = #h end
  for _, r in ipairs(rows) do
    for i, v in ipairs(r) do w[i] = math.max(w[i], #tostring(v)) end
  end
  local function line(r)
    local parts = {}
    for i, v in ipairs(r) do parts[i] = ("%-" .. w[i] .. "s"):format(tostring(v)) end
    print("  " .. table.concat(parts, "  "))
  end
  line(header)
  for _, r in ipairs(rows) do line(r) end
end

return C
