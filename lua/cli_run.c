// `xadapt run script.lua [key=value ...]`: run an experiment script with the `xadapt` module.
// key=value arguments become the global table `arg` (numbers and true/false converted); errors
// print the script's file:line and a traceback and exit 1. The module itself is lua_*.c.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lualib.h>

#include "cli.h"
#include "xl.h"

static void run_usage(FILE *f) {
    fprintf(f, "usage: xadapt run [--frozen-report] SCRIPT.lua [key=value ...] [word ...]\n"
               "\n"
               "Run an experiment script. The script loads the module with\n"
               "    local xa = require \"xadapt\"\n"
               "and sees its arguments in the global table `arg`: key=value pairs as arg.key\n"
               "(numbers and true/false converted, everything else a string), other words as\n"
               "arg[1], arg[2], ..., and the script path as arg[0].\n"
               "\n"
               "On an error the script's file:line, the message and a Lua traceback go to stderr\n"
               "and the exit status is 1 (2 for a usage error like this one).\n"
               "\n"
               "Frozen means frozen: every model's weight fingerprint is taken at load and checked\n"
               "again at the end; a change is an error (exit 1). --frozen-report prints both.\n"
               "\n"
               "The module, in brief (docs/lua-api.md has every option and error):\n"
               "  xa.load_plm(dir), xa.load_vlm(dir)       frozen BERT/RoBERTa and CLIP\n"
               "  xa.make_random{arch=, out=, ...}         a random-weight checkpoint\n"
               "  xa.model{plm=, vlm=, fusion=}            the network; m:insert, m:freeze,\n"
               "                                           m:activate, m:head, m:summary, ...\n"
               "  xa.data.jsonl / .tsv / .csv              data sets\n"
               "  xa.adamw{...}, xa.sgd{...}, xa.schedule  optimizers and schedules\n"
               "  xa.train{...}, xa.evaluate{...}          training and evaluation\n"
               "  xa.probe{...}                            zero-shot masked-word probing\n"
               "\n"
               "environment:\n"
               "  XADAPT_LUA_PATH=DIR   where xadapt/*.lua live (default: the source tree, then\n"
               "                        the install directory)\n"
               "  XADAPT_PLUGIN_PATH    extra adapter plugin directories (':'-separated)\n");
}

// The message handler: locate the error in the user's script when the message has no
// location, and append a traceback.
static int msgh(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    // "chunk:123: ..." already says where; anything else gets the user's line.
    const char *colon = strchr(msg, ':');
    bool located = false;
    if (colon && colon[1] >= '0' && colon[1] <= '9') {
        const char *p = colon + 1;
        while (*p >= '0' && *p <= '9')
            p++;
        located = *p == ':';
    }
    if (!located) {
        xl_push_user_where(L);
        lua_pushstring(L, msg);
        lua_concat(L, 2);
        msg = lua_tostring(L, -1);
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

static void push_arg_value(lua_State *L, const char *v) {
    if (!strcmp(v, "true"))
        lua_pushboolean(L, 1);
    else if (!strcmp(v, "false"))
        lua_pushboolean(L, 0);
    else if (!*v || lua_stringtonumber(L, v) == 0)
        lua_pushstring(L, v);
}

// os.exit([code [, close]]) for scripts under `xadapt run`: the state is always closed, so
// every model's finalizer checks its weights, and a change turns a success into status 1.
static int run_exit(lua_State *L) {
    int status = lua_isboolean(L, 1) ? (lua_toboolean(L, 1) ? EXIT_SUCCESS : EXIT_FAILURE)
                                     : (int)luaL_optinteger(L, 1, EXIT_SUCCESS);
    fflush(stdout);
    lua_close(L);
    if (xl_frozen_violations && status == EXIT_SUCCESS)
        status = 1;
    exit(status);
}

int cmd_run(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        run_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--frozen-report")) {
        xl_frozen_report = true;
        argv++, argc--;
        if (argc < 2) {
            run_usage(stderr);
            return 2;
        }
    }
    const char *script = argv[1];
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "xadapt run: out of memory\n");
        return 1;
    }
    luaL_openlibs(L);
    // os.exit must not skip the end-of-run check that the weights stayed frozen (Lua's exits
    // without closing the state unless asked, and never looks at the check's result)
    lua_getglobal(L, "os");
    lua_pushcfunction(L, run_exit);
    lua_setfield(L, -2, "exit");
    lua_pop(L, 1);
    // `require "xadapt"` gets the built-in module (not some xadapt.so on package.cpath).
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_xadapt);
    lua_setfield(L, -2, "xadapt");
    lua_pop(L, 1);

    lua_createtable(L, argc, argc);
    lua_pushstring(L, script);
    lua_rawseti(L, -2, 0);
    lua_Integer pos = 0;
    for (int i = 2; i < argc; i++) {
        const char *eq = strchr(argv[i], '=');
        if (eq && eq > argv[i]) {
            lua_pushlstring(L, argv[i], (size_t)(eq - argv[i]));
            push_arg_value(L, eq + 1);
            lua_rawset(L, -3);
        } else {
            lua_pushstring(L, argv[i]);
            lua_rawseti(L, -2, ++pos);
        }
    }
    lua_setglobal(L, "arg");

    int rc = 0;
    lua_pushcfunction(L, msgh);
    if (luaL_loadfile(L, script) != LUA_OK) {
        fprintf(stderr, "xadapt run: %s\n", lua_tostring(L, -1));
        rc = 1;
    } else if (lua_pcall(L, 0, 0, 1) != LUA_OK) {
        fflush(stdout);
        fprintf(stderr, "xadapt run: %s\n", lua_tostring(L, -1));
        rc = 1;
    }
    fflush(stdout);
    lua_close(L); // runs every finalizer: models (checking they stayed frozen), nets, plugins
    if (xl_frozen_violations)
        rc = 1;
    return rc;
}
