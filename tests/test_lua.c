// The Lua binding and runner: every script in tests/lua/ runs through the built `xadapt run`
// (each checks its own results and exits non-zero on the first failure), broken scripts must
// fail with their own file:line, the quickstart must run and assert its result in well under a
// minute, the examples run on the shared data, and a stock lua5.4 can `require "xadapt"`.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "support.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

// Run tests/lua/<name>.lua with out=<fresh dir>, src=<root>, shared=<dir> (when present) and
// the extra arguments; expect exit 0 and "<name>: N checks ok".
static void run_script(const char *name, const char *const *extra) {
    char script[4096], out[4200], src[4200], shared[4200], want[256];
    snprintf(script, sizeof script, "%s", src_path("tests/lua"));
    strncat(script, "/", sizeof script - strlen(script) - 1);
    strncat(script, name, sizeof script - strlen(script) - 1);
    strncat(script, ".lua", sizeof script - strlen(script) - 1);
    const char *tmp = make_tmpdir();
    cr_assert(tmp, "no temporary directory");
    snprintf(out, sizeof out, "out=%s", tmp);
    snprintf(src, sizeof src, "src=%s", src_path(""));
    const char *sh = shared_path("tokenizers");
    if (sh) {
        snprintf(shared, sizeof shared, "shared=%s", sh);
        shared[strlen(shared) - strlen("/tokenizers")] = '\0';
    }
    const char *argv[32] = {"run", script, out, src};
    int n = 4;
    if (sh)
        argv[n++] = shared;
    for (int i = 0; extra && extra[i] && n < 31; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    run_result r = run_xadapt(argv);
    snprintf(want, sizeof want, "%s: ", name);
    cr_expect_eq(r.status, 0, "%s.lua exited %d\nstdout:\n%s\nstderr:\n%s", name, r.status, r.out,
                 r.err);
    cr_expect(strstr(r.out, want) && strstr(r.out, "checks ok"), "%s.lua: no summary line:\n%s",
              name, r.out);
    run_free(&r);
}

Test(lua, basics_module_functions_and_arguments) {
    const char *extra[] = {"n=3", "x=0.5", "flag=true", "word=hello", "positional", NULL};
    run_script("basics", extra);
}

Test(lua, schedules_give_transformers_values) {
    run_script("schedule", NULL);
}
Test(lua, models_networks_heads_and_their_errors) {
    run_script("model", NULL);
}
Test(lua, readers_datasets_tokenizers_and_batches) {
    run_script("data", NULL);
}
Test(lua, training_objectives_evaluation_and_errors) {
    run_script("train", NULL);
}
Test(lua, resumed_run_reproduces_the_uninterrupted_losses_exactly) {
    run_script("resume", NULL);
}
Test(lua, clip_features_retrieval_and_distillation) {
    run_script("features", NULL);
}
Test(lua, masked_word_probing) {
    run_script("probe", NULL);
}
Test(lua, misuse_found_by_fuzzing_is_an_error_not_a_crash) {
    run_script("misuse", NULL);
}

// A broken script fails with exit status `status`, and its stderr names file:line and `msg`.
static void expect_broken(const char *file, int line, const char *msg, int status) {
    char script[4096], loc[256], out[4200];
    snprintf(script, sizeof script, "%s/%s", src_path("tests/lua/broken"), file);
    snprintf(out, sizeof out, "out=%s", make_tmpdir());
    const char *argv[] = {"run", script, out, NULL};
    run_result r = run_xadapt(argv);
    cr_expect_eq(r.status, status, "%s: exit %d, expected %d\n%s", file, r.status, status, r.err);
    if (line > 0) {
        snprintf(loc, sizeof loc, "%s:%d: ", file, line);
        cr_expect(strstr(r.err, loc), "%s: the error should point at %s, got:\n%s", file, loc,
                  r.err);
        cr_expect(strstr(r.err, msg), "%s: the error should say '%s', got:\n%s", file, msg, r.err);
        cr_expect(line == 3 || strstr(r.err, "stack traceback:"), "%s: no traceback:\n%s", file,
                  r.err);
    }
    cr_expect(!strstr(r.err, "Sanitizer"), "%s: the error path leaked or crashed:\n%s", file,
              r.err);
    run_free(&r);
}

Test(lua, broken_scripts_point_at_their_own_line) {
    expect_broken("syntax.lua", 3, "unexpected symbol", 1);
    expect_broken("runtime.lua", 4, "attempt to index a nil value", 1);
    expect_broken("c_error.lua", 7, "unknown adapter 'xadaptr' (loaded: ", 1);
    expect_broken("helper_error.lua", 8, "xa.train: unknown option 'epoch' (valid: ", 1);
    expect_broken("assert_nil.lua", 4, "/nonexistent/model", 1);
    expect_broken("callback_error.lua", 9, "stop at step 2", 1);
    expect_broken("arg_error.lua", 5, "bad argument #2 to 'write_png'", 1);
    expect_broken("exit_code.lua", 0, "", 3);
    expect_broken("frozen_exit.lua", 0, "", 1); // os.exit(0) after the weights changed
}

Test(lua, run_usage_and_help) {
    const char *help[] = {"run", "--help", NULL};
    run_result r = run_xadapt(help);
    cr_expect_eq(r.status, 0);
    cr_expect(strstr(r.out, "usage: xadapt run [--frozen-report] SCRIPT.lua") &&
                  strstr(r.out, "xa.train"),
              "%s", r.out);
    run_free(&r);
    const char *none[] = {"run", NULL};
    r = run_xadapt(none);
    cr_expect_eq(r.status, 2);
    cr_expect(strstr(r.err, "usage: xadapt run"), "%s", r.err);
    run_free(&r);
    const char *missing[] = {"run", "/nonexistent/script.lua", NULL};
    r = run_xadapt(missing);
    cr_expect_eq(r.status, 1);
    cr_expect(strstr(r.err, "cannot open /nonexistent/script.lua"), "%s", r.err);
    run_free(&r);
    const char *report_only[] = {"run", "--frozen-report", NULL};
    r = run_xadapt(report_only);
    cr_expect_eq(r.status, 2);
    run_free(&r);
    const char *top[] = {"--help", NULL};
    r = run_xadapt(top);
    cr_expect(strstr(r.out, "  run "), "xadapt --help lists run:\n%s", r.out);
    run_free(&r);
}

Test(lua, quickstart_runs_and_asserts_its_own_result, .timeout = 120) {
    char script[4096], out[4200];
    snprintf(script, sizeof script, "%s", src_path("lua/examples/quickstart.lua"));
    snprintf(out, sizeof out, "out=%s", make_tmpdir());
    const char *argv[] = {"run", "--frozen-report", script, out, NULL};
    double t0 = now_s();
    run_result r = run_xadapt(argv);
    double dt = now_s() - t0;
    cr_expect_eq(r.status, 0, "quickstart exited %d\n%s\n%s", r.status, r.out, r.err);
    cr_expect(strstr(r.out, "quickstart: OK"), "%s", r.out);
    cr_expect(strstr(r.out, "accuracy with the V-expert on"), "%s", r.out);
    cr_expect_lt(dt, 30.0, "the quickstart took %.1f s", dt);
    // both frozen models, fingerprinted at load and found unchanged at the end
    const char *at = r.err;
    int loads = 0, ends = 0;
    while ((at = strstr(at, " at load")))
        loads++, at++;
    for (at = r.err; (at = strstr(at, "unchanged at the end of the run")); at++)
        ends++;
    cr_expect(loads == 2 && ends == 2, "frozen report:\n%s", r.err);
    run_free(&r);
}

// The examples on the shared data, with their smallest settings.
static void run_example(const char *name, const char *const *extra) {
    const char *data = shared_path("data");
    if (!data)
        cr_skip_test("../shared/data is absent");
    char script[4096], out[4200], shared[4200];
    snprintf(script, sizeof script, "%s/%s", src_path("lua/examples"), name);
    snprintf(out, sizeof out, "out=%s", make_tmpdir());
    snprintf(shared, sizeof shared, "shared=%s", data);
    shared[strlen(shared) - strlen("/data")] = '\0';
    const char *argv[32] = {"run", script, out, shared};
    int n = 4;
    for (int i = 0; extra && extra[i] && n < 31; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    run_result r = run_xadapt(argv);
    cr_expect_eq(r.status, 0, "%s exited %d\nstdout:\n%s\nstderr:\n%s", name, r.status, r.out,
                 r.err);
    cr_expect(strstr(r.out, ": OK"), "%s: no OK line:\n%s", name, r.out);
    run_free(&r);
}

Test(lua, example_xadapter_colors, .timeout = 300) {
    const char *extra[] = {"n=48", "steps=4", "batch=8", NULL};
    run_example("xadapter_colors.lua", extra);
}
Test(lua, example_kadapter, .timeout = 300) {
    const char *extra[] = {"facts=64", "steps=4", "sst2=32", "dev=32", "ft_steps=4", NULL};
    run_example("kadapter.lua", extra);
}
Test(lua, example_glue_sst2_lora, .timeout = 300) {
    const char *extra[] = {"task=sst2", "adapter=lora", "n=64", "dev=32",
                           "steps=6",   "eval_every=3", NULL};
    run_example("glue.lua", extra);
}
Test(lua, example_glue_rte_xadapter, .timeout = 300) {
    const char *extra[] = {"task=rte", "adapter=xadapter", "n=32",    "dev=16",
                           "steps=4",  "eval_every=2",     "pool=40", NULL};
    run_example("glue.lua", extra);
}
Test(lua, example_glue_rte_kadapter, .timeout = 300) {
    const char *extra[] = {"task=rte", "adapter=kadapter", "n=32",        "dev=16",
                           "steps=4",  "eval_every=2",     "resume=true", NULL};
    run_example("glue.lua", extra);
}

// A stock lua5.4 finds the module as xadapt.so on LUA_CPATH.
Test(lua, stock_lua_requires_the_module) {
    if (system("command -v lua5.4 > /dev/null 2>&1") != 0)
        cr_skip_test("no lua5.4 interpreter");
    const char *build = getenv("XADAPT_BUILD_ROOT");
    cr_assert(build, "XADAPT_BUILD_ROOT is not set");
    char cmd[8192], outp[4200];
    snprintf(outp, sizeof outp, "%s/out.txt", make_tmpdir());
    // An ASan build's module needs the sanitizer runtime loaded first into the stock interpreter.
#if defined(__SANITIZE_ADDRESS__)
    const char *pre = "LD_PRELOAD=$(gcc -print-file-name=libasan.so) ";
#else
    const char *pre = "";
#endif
    snprintf(cmd, sizeof cmd,
             "%sLUA_CPATH='%s/lua/binding/?.so;;' lua5.4 -e 'local xa = require \"xadapt\"; "
             "local s = xa.schedule.linear{warmup = 2}; "
             "print(xa.version, s(1, 10), type(xa.train), type(xa.model))' > '%s' 2>&1",
             pre, build, outp);
    int st = system(cmd);
    char *text = read_file(outp, NULL);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "lua5.4 failed:\n%s", text ? text : "");
    cr_expect(text && strstr(text, "0.5\tfunction\tfunction"), "got: %s", text ? text : "");
    free(text);
}
