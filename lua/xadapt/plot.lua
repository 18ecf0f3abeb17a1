-- Loss curves as SVG, written by hand: one polyline per series (loss vs step), axes with "nice"
-- ticks (1, 2, 5 x 10^k), grid lines, a legend and a title. xa.plot(path, series, opts) is public;
-- xa.train writes one beside its metrics log.
local xa = require "xadapt"
local U = require "xadapt.util"

local Plot = {}

local function nice_step(span, want)
  if span <= 0 then return 1 end
  local raw = span / want
  local mag = 10 ^ math.floor(math.log(raw, 10))
  for _, m in ipairs({1, 2, 5, 10}) do
    if raw <= m * mag then return m * mag end
  end
  return 10 * mag
end

-- Tick values covering [lo, hi] (which are widened to whole ticks).
local function ticks(lo, hi, want)
  if hi <= lo then
    local pad = lo == 0 and 1 or math.abs(lo) * 0.1
    lo, hi = lo - pad, hi + pad
  end
  local step = nice_step(hi - lo, want)
  local first, last = math.floor(lo / step) * step, math.ceil(hi / step) * step
  local out = {}
  for i = 0, math.floor((last - first) / step + 0.5) do out[#out + 1] = first + i * step end
  return out, first, last, step
end

local function fmt(v, step)
  if step >= 1 and math.abs(v) < 1e7 then return ("%d"):format(math.floor(v + 0.5)) end
  local decimals = math.max(0, math.ceil(-math.log(step, 10)))
  if math.abs(v) >= 1e5 or (v ~= 0 and math.abs(v) < 1e-4) then return ("%.1e"):format(v) end
  return ("%." .. decimals .. "f"):format(v)
end

local function esc(s)
  return (tostring(s):gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;"):gsub('"', "&quot;"))
end

local colors = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"}

-- The SVG text for `series` = { {name=, points={{x, y}, ...}, markers=bool}, ... }.
-- opts: title, xlabel, ylabel, width, height.
function Plot.svg(series, opts)
  opts = opts or {}
  local W, H = opts.width or 720, opts.height or 420
  local ml, mr, mt, mb = 70, 20, 40, 50
  local xmin, xmax, ymin, ymax = math.huge, -math.huge, math.huge, -math.huge
  for _, s in ipairs(series) do
    for _, p in ipairs(s.points) do
      if p[2] == p[2] and math.abs(p[2]) ~= math.huge then
        xmin, xmax = math.min(xmin, p[1]), math.max(xmax, p[1])
        ymin, ymax = math.min(ymin, p[2]), math.max(ymax, p[2])
      end
    end
  end
  if xmin == math.huge then xmin, xmax, ymin, ymax = 0, 1, 0, 1 end
  local xt, x0, x1, xs = ticks(math.min(0, xmin), xmax, 8)
  local yt, y0, y1, ys = ticks(ymin, ymax, 6)
  local pw, ph = W - ml - mr, H - mt - mb
  local function X(v) return ml + (v - x0) / (x1 - x0) * pw end
  local function Y(v) return mt + ph - (v - y0) / (y1 - y0) * ph end
  local o = {}
  local function add(fmt_, ...) o[#o + 1] = fmt_:format(...) end
  add('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" ' ..
      'font-family="sans-serif" font-size="12">', W, H, W, H)
  add('<rect x="0" y="0" width="%d" height="%d" fill="white"/>', W, H)
  add('<text x="%d" y="22" text-anchor="middle" font-size="15">%s</text>', W // 2,
      esc(opts.title or "loss"))
  for _, v in ipairs(xt) do
    add('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#e5e5e5"/>', X(v), mt, X(v), mt + ph)
    add('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="black"/>', X(v), mt + ph, X(v), mt + ph + 5)
    add('<text x="%.1f" y="%d" text-anchor="middle">%s</text>', X(v), mt + ph + 18, fmt(v, xs))
  end
  for _, v in ipairs(yt) do
    add('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e5e5e5"/>', ml, Y(v), ml + pw, Y(v))
    add('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="black"/>', ml - 5, Y(v), ml, Y(v))
    add('<text x="%d" y="%.1f" text-anchor="end">%s</text>', ml - 8, Y(v) + 4, fmt(v, ys))
  end
  add('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>', ml, mt + ph, ml + pw, mt + ph)
  add('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>', ml, mt, ml, mt + ph)
  add('<text x="%d" y="%d" text-anchor="middle">%s</text>', ml + pw // 2, H - 10,
      esc(opts.xlabel or "step"))
  add('<text x="16" y="%d" text-anchor="middle" transform="rotate(-90 16 %d)">%s</text>',
      mt + ph // 2, mt + ph // 2, esc(opts.ylabel or "loss"))
  for i, s in ipairs(series) do
    local color = s.color or colors[(i - 1) % #colors + 1]
    local pts = {}
    for _, p in ipairs(s.points) do
      if p[2] == p[2] and math.abs(p[2]) ~= math.huge then
        pts[#pts + 1] = ("%.1f,%.1f"):format(X(p[1]), Y(p[2]))
      end
    end
    if #pts > 0 then
      add('<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>', color,
          table.concat(pts, " "))
      if s.markers or #pts == 1 then
        for _, p in ipairs(pts) do
          local px, py = p:match("([^,]+),(.+)")
          add('<circle cx="%s" cy="%s" r="3" fill="%s"/>', px, py, color)
        end
      end
    end
    add('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>', ml + pw - 150,
        mt + 12 + (i - 1) * 18, ml + pw - 125, mt + 12 + (i - 1) * 18, color)
    add('<text x="%d" y="%d">%s</text>', ml + pw - 120, mt + 16 + (i - 1) * 18, esc(s.name or ""))
  end
  add("</svg>")
  return table.concat(o, "\n") .. "\n"
end

-- xa.plot(path, series[, opts]) -> true | nil, msg (written atomically).
function xa.plot(path, series, opts)
  U.check_type("xa.plot", "path", path, "string")
  U.check_type("xa.plot", "series", series, "table")
  U.check_opts("xa.plot", opts, {"title", "xlabel", "ylabel", "width", "height"}, true)
  for i, s in ipairs(series) do
    if type(s) ~= "table" or type(s.points) ~= "table" then
      U.raise("xa.plot: series %d must be {name = ..., points = {{x, y}, ...}}", i)
    end
    for j, p in ipairs(s.points) do
      if type(p) ~= "table" or type(p[1]) ~= "number" or type(p[2]) ~= "number" then
        U.raise("xa.plot: series %d, point %d must be {x, y} (two numbers)", i, j)
      end
    end
  end
  for _, key in ipairs({"width", "height"}) do
    local v = opts and opts[key]
    if v ~= nil and U.check_type("xa.plot", key, v, "integer") < 100 then
      U.raise("xa.plot: %s must be at least 100 pixels, got %d", key, v)
    end
  end
  return U.write_atomic(path, Plot.svg(series, opts))
end

return Plot
