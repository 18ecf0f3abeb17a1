-- Helpers shared by the pure-Lua parts of the xadapt module: errors located at the user's
-- script line (not inside these helpers), option-table checking that lists the valid keys,
-- type names of xadapt objects, and number formatting. No xadapt functions live here.
local xa = require "xadapt"

local U = {}
local libdir = xa._libdir

-- The stack level (as error() counts from the caller of U.raise) of the innermost frame that
-- belongs to the user: not C, not a file of this library.
local function user_level()
  local level = 3 -- 1 = user_level, 2 = U.raise, 3 = its caller
  while true do
    local info = debug.getinfo(level, "Sl")
    if not info then return 1 end
    local ours = info.source:sub(1, 1) == "@" and info.source:sub(2, #libdir + 1) == libdir
    if info.currentline > 0 and not ours then return level - 1 end
    level = level + 1
  end
end

-- Raise `fmt:format(...)` located in the user's script.
function U.raise(fmt, ...)
  local msg = select("#", ...) > 0 and fmt:format(...) or fmt
  error(msg, user_level())
end

function U.sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  return keys
end

-- Every key of `t` must be one of `valid` (a list); raise naming the bad key and the valid ones.
function U.check_opts(fname, t, valid, optional)
  if t == nil and optional then return {} end
  if type(t) ~= "table" then
    U.raise("%s: expected an options table, got %s", fname, type(t))
  end
  local set = {}
  for _, k in ipairs(valid) do set[k] = true end
  for k in pairs(t) do
    if not set[k] then
      local list = {}
      for _, v in ipairs(valid) do list[#list + 1] = v end
      table.sort(list)
      U.raise("%s: unknown option '%s' (valid: %s)", fname, tostring(k), table.concat(list, ", "))
    end
  end
  return t
end

-- One of `choices`; raise listing them.
function U.check_enum(fname, key, value, choices)
  for _, c in ipairs(choices) do
    if value == c then return value end
  end
  U.raise("%s: %s = %s is not one of: %s", fname, key, tostring(value), table.concat(choices, ", "))
end

function U.check_type(fname, key, value, want, optional)
  if value == nil and optional then return nil end
  if want == "integer" then
    local i = math.tointeger(value) -- nil for strings, fractions, infinities and |x| >= 2^63
    if type(value) ~= "number" or not i then
      U.raise("%s: %s must be an integer, got %s", fname, key, tostring(value))
    end
    return i
  end
  if type(value) ~= want then
    U.raise("%s: %s must be a %s, got %s", fname, key, want, type(value))
  end
  return value
end

-- An integer >= 1.
function U.check_positive(fname, key, value)
  local v = U.check_type(fname, key, value, "integer")
  if v < 1 then U.raise("%s: %s must be >= 1, got %d", fname, key, v) end
  return v
end

-- The xadapt type of a value ("xadapt.Model", ...), or Lua's type.
function U.typeof(v)
  if type(v) == "userdata" then
    local mt = getmetatable(v)
    return type(mt) == "table" and mt.__name or "userdata"
  end
  if type(v) == "table" then
    local mt = getmetatable(v)
    if type(mt) == "table" and mt.__name then return mt.__name end
  end
  return type(v)
end

function U.thousands(n)
  local s = tostring(math.floor(n))
  local out = s:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  return (out:gsub("^,", ""):gsub("^%-,", "-"))
end

function U.duration(s)
  if s ~= s or s == math.huge then return "?" end
  s = math.max(0, s)
  if s < 60 then return ("%.1fs"):format(s) end
  if s < 3600 then return ("%dm%02ds"):format(s // 60, math.floor(s % 60)) end
  return ("%dh%02dm"):format(s // 3600, math.floor((s % 3600) / 60))
end

-- Write `text` to `path` atomically: a temporary file beside it, then a rename.
function U.write_atomic(path, text)
  local tmp = ("%s.tmp.%d"):format(path, math.random(1, 1 << 30))
  local f, err = io.open(tmp, "wb")
  if not f then return nil, err end
  local ok, werr = f:write(text)
  local cok, cerr = f:close()
  if not ok or not cok then
    os.remove(tmp)
    return nil, werr or cerr
  end
  local rok, rerr = os.rename(tmp, path)
  if not rok then
    os.remove(tmp)
    return nil, rerr
  end
  return true
end

function U.dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

function U.join(dir, name)
  if name:sub(1, 1) == "/" or dir == nil or dir == "" then return name end
  return dir:gsub("/$", "") .. "/" .. name
end

function U.copy(t)
  local c = {}
  for k, v in pairs(t or {}) do c[k] = v end
  return c
end

return U
