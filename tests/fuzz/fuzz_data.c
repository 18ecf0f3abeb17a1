// libFuzzer harness for the data-set readers of the Lua API, xa.data.read_jsonl and
// xa.data.read_table. An input is one byte choosing the reader and its options, then the file
// (a memfd). Both readers answer either (records, lines, warnings) or (nil, message naming the
// file); a Lua error is acceptable only as a string. Anything else, a crash or a sanitizer
// report is a finding. The binding's sources are compiled into the harness (see meson.build).
#include "fuzz_util.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

int luaopen_xadapt(lua_State *L);

static lua_State *L;
static int fd = -1, reader = LUA_NOREF;
static char path[32];

// mode -> the call; then the shape of what came back, checked in Lua where it is easiest to say.
static const char *const script =
    "local xa = require 'xadapt'\n"
    "local calls = {\n"
    "  function(p) return xa.data.read_jsonl(p) end,\n"
    "  function(p) return xa.data.read_jsonl(p, {skip_bad = true}) end,\n"
    "  function(p) return xa.data.read_table(p) end,\n"
    "  function(p) return xa.data.read_table(p, {sep = ',', quote = true, skip_bad = true}) end,\n"
    "  function(p) return xa.data.read_table(p, {header = false, quote = true}) end,\n"
    "  function(p) return xa.data.read_table(p, {sep = ';', header = true}) end,\n"
    "}\n"
    "return function(p, mode)\n"
    "  local ok, recs, lines, warns = pcall(calls[mode % #calls + 1], p)\n"
    "  if not ok then\n"
    "    assert(type(recs) == 'string', 'a Lua error that is not a message')\n"
    "    return\n"
    "  end\n"
    "  if recs == nil then\n"
    "    assert(type(lines) == 'string' and lines:find(p, 1, true), 'a refusal names the file')\n"
    "    return\n"
    "  end\n"
    "  assert(type(recs) == 'table' and type(lines) == 'table' and type(warns) == 'table')\n"
    "  assert(#recs == #lines, 'one line number per record')\n"
    "  for i = 2, #lines do assert(lines[i] > lines[i - 1], 'line numbers increase') end\n"
    "  for _, r in ipairs(recs) do assert(type(r) == 'table', 'records are tables') end\n"
    "end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!L) {
        fuzz_name = "fuzz_data";
        L = luaL_newstate();
        check(L != NULL, "lua state");
        luaL_openlibs(L);
        luaL_requiref(L, "xadapt", luaopen_xadapt, 0);
        lua_pop(L, 1);
        check(luaL_loadstring(L, script) == LUA_OK && lua_pcall(L, 0, 1, 0) == LUA_OK, "script");
        reader = luaL_ref(L, LUA_REGISTRYINDEX);
        fd = fuzz_memfd("fuzz.data", path);
    }
    if (size < 1)
        return 0;
    fuzz_put(fd, data + 1, size - 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, reader);
    lua_pushstring(L, path);
    lua_pushinteger(L, data[0]);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
        fprintf(stderr, "fuzz_data: %s\n", lua_tostring(L, -1));
        check(0, "the result has the promised shape");
    }
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT);
    return 0;
}
