-- The module's small functions: version, arguments, JSON, seeding, permutations, files, PNG.
package.path = (arg[0]:match("^(.*/)") or "./") .. "?.lua;" .. package.path
local xa = require "xadapt"
local H = require "harness"

H.check(type(xa.version) == "string" and xa.version:match("^%d+%.%d+%.%d+$"), "version")
H.eq(require "xadapt", xa, "require returns the same module")

-- key=value arguments: numbers converted, true/false booleans, the rest strings
H.eq(math.type(arg.n), "integer", "arg.n type")
H.eq(arg.n, 3, "arg.n")
H.eq(arg.x, 0.5, "arg.x")
H.eq(arg.flag, true, "arg.flag")
H.eq(arg.word, "hello", "arg.word")
H.eq(arg[1], "positional", "arg[1]")

-- JSON
local j = xa.json.encode({a = 1, b = {1, 2, 3}, c = "x\"y", d = true})
local back = xa.json.decode(j)
H.eq(back.a, 1, "json a")
H.eq(#back.b, 3, "json list")
H.eq(back.c, "x\"y", "json string")
H.eq(back.d, true, "json bool")
H.eq(xa.json.encode({}), "{}", "empty table is an object")
H.eq(xa.json.encode({}, true), "[]", "empty table as a list")
-- numbers read back as the same values: floats need up to 17 digits, integers all of theirs
for _, x in ipairs({0.1 + 0.2, 1 / 3, 123456789.12345679, 5e-324, -2.5e300, 2^53}) do
  H.eq(xa.json.decode(xa.json.encode({x = x})).x, x, "float " .. x .. " round-trips")
end
H.eq(xa.json.encode({n = 1234567890123456789}), '{"n":1234567890123456789}', "integers in full")
H.eq(xa.json.encode({x = 0.5, i = 3}), '{"i":3,"x":0.5}', "short where short is exact")
H.eq(xa.json.encode({1 / 0, 0 / 0}), "[null,null]", "no JSON for inf and nan: null")
H.fails(function() return xa.json.decode("{bad") end, "invalid JSON")
H.raises(function() xa.json.encode({f = print}) end, "function cannot be written as JSON")

-- seeded permutations: deterministic, a permutation, seed-dependent
local p1, p2, p3 = xa.permutation(50, 7), xa.permutation(50, 7), xa.permutation(50, 8)
local same, seen = true, {}
for i = 1, 50 do
  same = same and p1[i] == p2[i]
  seen[p1[i]] = true
end
H.check(same, "same seed, same permutation")
for i = 1, 50 do H.check(seen[i], "permutation misses %d", i) end
local differ = false
for i = 1, 50 do differ = differ or p1[i] ~= p3[i] end
H.check(differ, "another seed, another permutation")
H.raises(function() xa.permutation(-1, 1) end, "bad argument #1")
-- called without a name (through pcall), an argument error still names the function
local ok, msg = pcall(xa.json.encode, {f = print})
H.check(not ok and msg:find("bad argument #1 to 'xa.json.encode'", 1, true), "named: %s", msg)
ok, msg = pcall(xa.permutation, -1, 1)
H.check(not ok and msg:find("to 'xa.permutation'", 1, true), "named: %s", msg)

-- the context RNG: state round trip
xa.seed(42)
local s = xa.rng_state()
H.eq(#s, 4, "rng state size")
xa.rng_state(s)
H.raises(function() xa.rng_state({1, 2}) end, "list of 4 integers")

-- clock, isatty, threads
local t0 = xa.clock()
H.check(xa.clock() >= t0, "clock is monotonic")
H.eq(type(xa.isatty(1)), "boolean", "isatty")
H.check(xa.threads() >= 1, "threads")

-- directories and files
local d = H.out .. "/a/b/c"
H.check(xa.mkdir(d), "mkdir -p")
H.check(xa.mkdir(d), "mkdir of an existing directory")
H.write(d .. "/f.txt", "x")
local names = assert(xa.listdir(d))
H.eq(#names, 1, "listdir")
H.eq(names[1], "f.txt", "listdir name")
H.fails(function() return xa.listdir(H.out .. "/missing") end, "missing")
local t = assert(xa.tempdir("t-"))
H.check(xa.listdir(t) and #xa.listdir(t) == 0, "tempdir is empty")

-- PNG writer: the file starts with the signature; bad sizes are misuse
local png = H.out .. "/x.png"
H.check(xa.write_png(png, 2, 1, "\255\0\0\0\255\0"), "write_png")
H.eq(H.read(png):sub(1, 8), "\137PNG\r\n\26\n", "PNG signature")
H.raises(function() xa.write_png(png, 2, 2, "abc") end, "expected 12 bytes")
H.fails(function() return xa.write_png("/nonexistent/dir/x.png", 1, 1, "abc") end, "cannot write")

-- SVG curves
local svg = H.out .. "/c.svg"
H.check(xa.plot(svg, {{name = "a", points = {{0, 1}, {10, 0.5}, {20, 0.25}}},
                      {name = "b", points = {{5, 0.7}}, markers = true}},
                {title = "t & <x>", xlabel = "step", ylabel = "loss"}), "plot")
local text = H.read(svg)
H.check(text:find("<polyline", 1, true) and text:find("t &amp; &lt;x&gt;", 1, true), "escaped title")
H.check(text:find(">20<", 1, true) and text:find(">0.25<", 1, true) or text:find(">0.2<", 1, true),
        "ticks")
H.raises(function() xa.plot(svg, {{name = "a"}}) end, "series 1 must be")
H.raises(function() xa.plot(svg, {}, {titel = "x"}) end, "unknown option 'titel'")
H.fails(function() return xa.plot("/nonexistent/dir/c.svg", {}) end)

-- threads
local before = xa.threads()
H.eq(xa.threads(1), 1, "set threads")
xa.threads(before)

-- plugins: the built ones are found
local plugins = xa.plugins()
for _, cls in ipairs({"xadapter", "bottleneck", "kadapter", "lora"}) do
  H.check(plugins.classes:find(cls, 1, true), "plugin class %s not found in %s", cls,
          plugins.classes)
end

H.done("basics")
