-- Changes a loaded model's weight file in place, then leaves through os.exit(0): the run must
-- still check the weights at the end and exit 1 (os.exit used to skip the check).
local xa = require "xadapt"
local dir = arg.out .. "/bert"
assert(xa.make_random{arch = "bert-tiny", out = dir, seed = 1})
local plm = assert(xa.load_plm(dir))
local f = assert(io.open(dir .. "/model.safetensors", "r+b"))
local hlen = string.unpack("<I8", f:read(8))
local header = xa.json.decode(f:read(hlen))
local at = 8 + hlen + header["encoder.layer.0.attention.self.query.weight"].data_offsets[1]
f:seek("set", at)
local byte = f:read(1)
f:seek("set", at)
f:write(string.char(byte:byte() ~ 0x40))
f:close()
print(plm)
os.exit(0)
