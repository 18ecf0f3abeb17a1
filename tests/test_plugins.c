// The plugin loader with real shared objects (built from tests/plugins/ into
// $XADAPT_TEST_PLUGIN_DIR): every way a file is refused gives its status, a message naming the
// path and the reason, and a record in the registry, never a crash; `xadapt plugins` lists the
// refusals beside the good plugins; the plugin template and the (IA)^3 example work in a net.
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapters_common.h"
#include "gradcheck.h"
#include "support.h"

static const char *plugin_path(const char *file) {
    static char buf[8][4096];
    static int at;
    const char *dir = getenv("XADAPT_TEST_PLUGIN_DIR");
    cr_assert(dir, "XADAPT_TEST_PLUGIN_DIR is not set (run through meson test)");
    char *b = buf[at++ % 8];
    snprintf(b, sizeof buf[0], "%s/%s", dir, file);
    return b;
}

static const char *template_path(void) {
    static char buf[4096];
    const char *root = getenv("XADAPT_BUILD_ROOT");
    cr_assert(root, "XADAPT_BUILD_ROOT is not set (run through meson test)");
    snprintf(buf, sizeof buf, "%s/plugins/template/template.so", root);
    return buf;
}

static const xa_plugin_record *record_of(xa_registry *r, const char *path) {
    for (size_t i = 0; i < xa_registry_count(r); i++)
        if (!strcmp(xa_registry_at(r, i)->path, path))
            return xa_registry_at(r, i);
    return NULL;
}

// Load `file` into `r` and check the refusal: status, message (path and reason) and record.
static void expect_refused(xa_ctx *ctx, xa_registry *r, const char *path, xa_status code,
                           const char *reason) {
    xa_status st = xa_registry_load(r, path);
    cr_expect_eq(st, code, "%s: status %s, expected %s (%s)", path, xa_status_name(st),
                 xa_status_name(code), xa_errmsg(ctx));
    cr_expect(strstr(xa_errmsg(ctx), path), "message does not name the file: %s", xa_errmsg(ctx));
    cr_expect(strstr(xa_errmsg(ctx), reason), "message lacks '%s': %s", reason, xa_errmsg(ctx));
    const xa_plugin_record *rec = record_of(r, path);
    cr_assert(rec, "no registry record for %s", path);
    cr_expect(rec->refused && strstr(rec->refused, reason), "record says '%s', expected '%s'",
              rec->refused ? rec->refused : "(loaded)", reason);
    cr_expect_null(rec->name, "a refused plugin has no name");
}

static void refusal_case(const char *file, xa_status code, const char *reason) {
    xa_ctx *ctx = xa_ctx_new();
    xa_registry *r = xa_registry_new(ctx);
    expect_refused(ctx, r, plugin_path(file), code, reason);
    cr_expect_null(xa_registry_find(r, "test_good", NULL), "a refused plugin's class is usable");
    // the registry is still usable after a refusal
    cr_expect_eq(xa_registry_load(r, plugin_path("good.so")), XA_OK, "%s", xa_errmsg(ctx));
    cr_expect_not_null(xa_registry_find(r, "test_good", NULL));
    xa_registry_free(r);
    xa_ctx_free(ctx);
}

Test(plugins, a_good_plugin_loads_and_registers_its_class) {
    xa_ctx *ctx = xa_ctx_new();
    xa_registry *r = xa_registry_new(ctx);
    const char *path = plugin_path("good.so");
    cr_assert_eq(xa_registry_load(r, path), XA_OK, "%s", xa_errmsg(ctx));
    const xa_plugin_record *from = NULL;
    const xa_adapter_class *c = xa_registry_find(r, "test_good", &from);
    cr_assert_not_null(c);
    cr_expect_str_eq(from->path, path);
    cr_expect_str_eq(from->name, "test_good");
    cr_expect_str_eq(from->version, "0.0.1");
    cr_expect_eq(from->abi_major, XA_ABI_MAJOR);
    cr_expect_eq(from->abi_minor, XA_ABI_MINOR);
    cr_expect_null(from->refused);
    cr_expect_str_eq(c->submodules[1], "b");
    xa_registry_free(r);
    xa_ctx_free(ctx);
}

Test(plugins, the_same_file_loaded_twice_is_loaded_once) {
    xa_ctx *ctx = xa_ctx_new();
    xa_registry *r = xa_registry_new(ctx);
    cr_assert_eq(xa_registry_load(r, plugin_path("good.so")), XA_OK, "%s", xa_errmsg(ctx));
    cr_expect_eq(xa_registry_load(r, plugin_path("good.so")), XA_OK, "%s", xa_errmsg(ctx));
    // another spelling of the same file is the same file
    char other[4200];
    snprintf(other, sizeof other, "%s/./good.so", getenv("XADAPT_TEST_PLUGIN_DIR"));
    cr_expect_eq(xa_registry_load(r, other), XA_OK, "%s", xa_errmsg(ctx));
    cr_expect_eq(xa_registry_count(r), 1, "%zu records", xa_registry_count(r));
    cr_expect_eq(xa_errcode(ctx), XA_OK, "no duplicate-class refusal: %s", xa_errmsg(ctx));
    xa_registry_free(r);
    xa_ctx_free(ctx);
}

Test(plugins, a_copy_of_a_loaded_plugin_later_on_the_path_is_shadowed_not_an_error) {
    xa_ctx *ctx = xa_ctx_new();
    xa_registry *r = xa_registry_new(ctx);
    const char *dir = make_tmpdir();
    char copy[4200], cmd[8600];
    snprintf(copy, sizeof copy, "%s/good.so", dir);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", plugin_path("good.so"), copy);
    cr_assert_eq(system(cmd), 0);
    cr_assert_eq(xa_registry_load(r, plugin_path("good.so")), XA_OK, "%s", xa_errmsg(ctx));
    cr_expect_eq(xa_registry_load(r, copy), XA_OK, "%s", xa_errmsg(ctx));
    cr_assert_eq(xa_registry_count(r), 2);
    const xa_plugin_record *rec = xa_registry_at(r, 1);
    cr_expect(rec->refused && strstr(rec->refused, "shadowed by"), "%s", rec->refused);
    const xa_plugin_record *from;
    cr_expect_not_null(xa_registry_find(r, "test_good", &from));
    cr_expect_eq(from, xa_registry_at(r, 0), "the first copy on the path is the one in use");
    xa_registry_free(r);
    xa_ctx_free(ctx);
}

Test(plugins, refuses_a_missing_file) {
    refusal_case("no_such_plugin.so", XA_EPLUGIN, "file not found");
}

Test(plugins, refuses_a_file_that_is_not_a_shared_object) {
    refusal_case("bad.so", XA_EPLUGIN, "cannot load as a shared object");
}

Test(plugins, refuses_a_library_without_the_init_symbol) {
    refusal_case("no_init.so", XA_EPLUGIN, "no 'xa_plugin_init' symbol");
}

Test(plugins, refuses_an_unresolved_symbol_with_the_dynamic_linkers_message) {
    refusal_case("unresolved.so", XA_EPLUGIN, "cannot load as a shared object");
    xa_ctx *ctx = xa_ctx_new();
    xa_registry *r = xa_registry_new(ctx);
    expect_refused(ctx, r, plugin_path("unresolved.so"), XA_EPLUGIN,
                   "undefined symbol: xa_test_symbol_defined_nowhere");
    xa_registry_free(r);
    xa_ctx_free(ctx);
}

Test(plugins, refuses_a_plugin_built_for_another_abi_major_naming_both_versions) {
    char want[64];
    snprintf(want, sizeof want, "built for plugin ABI %d.%d, this xadapt speaks %d.%d",
             XA_ABI_MAJOR + 1, XA_ABI_MINOR, XA_ABI_MAJOR, XA_ABI_MINOR);
    refusal_case("major_newer.so", XA_EABI, want);
}

Test(plugins, refuses_a_plugin_built_for_a_newer_abi_minor) {
    char want[80];
    snprintf(want, sizeof want, "built for plugin ABI %d.%d, newer than this xadapt's %d.%d",
             XA_ABI_MAJOR, XA_ABI_MINOR + 1, XA_ABI_MAJOR, XA_ABI_MINOR);
    refusal_case("minor_newer.so", XA_EABI, want);
}

Test(plugins, refuses_an_init_that_did_not_fill_in_its_info) {
    refusal_case("no_info.so", XA_EABI, "init did not fill in its plugin info");
}

Test(plugins, refuses_a_failing_init_and_shows_its_message) {
    refusal_case("init_fails.so", XA_EPLUGIN, "init failed: needs libfrobnicate 2.0, found none");
}

Test(plugins, refuses_a_plugin_without_classes) {
    refusal_case("no_classes.so", XA_EPLUGIN, "set no name or no classes");
}

Test(plugins, refuses_a_class_struct_too_small_for_abi_1_0) {
    refusal_case("short_class.so", XA_EABI, "class #0 is incomplete (struct_size 24");
}

Test(plugins, refuses_a_class_without_forward) {
    refusal_case("no_forward.so", XA_EABI, "class #0 is incomplete");
}

Test(plugins, refuses_a_second_plugin_registering_the_same_class) {
    xa_ctx *ctx = xa_ctx_new();
    xa_registry *r = xa_registry_new(ctx);
    cr_assert_eq(xa_registry_load(r, plugin_path("good.so")), XA_OK, "%s", xa_errmsg(ctx));
    char want[4200];
    snprintf(want, sizeof want, "adapter class 'test_good' is already registered by %s",
             plugin_path("good.so"));
    expect_refused(ctx, r, plugin_path("good_twin.so"), XA_EPLUGIN, want);
    const xa_plugin_record *from = NULL;
    cr_expect_not_null(xa_registry_find(r, "test_good", &from));
    cr_expect_str_eq(from->path, plugin_path("good.so"), "the first registration wins");
    xa_registry_free(r);
    xa_ctx_free(ctx);
}

Test(plugins, a_scan_records_every_refusal_and_keeps_the_good_plugins) {
    cr_assert_eq(setenv("XADAPT_PLUGIN_PATH", getenv("XADAPT_TEST_PLUGIN_DIR"), 1), 0);
    xa_ctx *ctx = xa_ctx_new();
    xa_registry *r = xa_registry_new(ctx);
    cr_assert_eq(xa_registry_scan(r), XA_OK, "%s", xa_errmsg(ctx));
    cr_expect_eq(xa_errcode(ctx), XA_OK, "a scan leaves no error behind: %s", xa_errmsg(ctx));
    static const char *const refused[] = {"bad.so",         "good_twin.so",   "init_fails.so",
                                          "major_newer.so", "minor_newer.so", "no_classes.so",
                                          "no_forward.so",  "no_info.so",     "no_init.so",
                                          "short_class.so", "unresolved.so"};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        const xa_plugin_record *rec = record_of(r, plugin_path(refused[i]));
        cr_expect(rec && rec->refused, "%s should be refused", refused[i]);
    }
    const xa_plugin_record *good = record_of(r, plugin_path("good.so"));
    cr_expect(good && !good->refused, "good.so should load");
    cr_expect_not_null(xa_registry_find(r, "test_good", NULL));
    cr_expect_not_null(xa_registry_find(r, "ia3", NULL), "the example is built here too");
    cr_expect_not_null(xa_registry_find(r, "bottleneck", NULL), "the build tree's adapters");
    xa_registry_free(r);
    xa_ctx_free(ctx);
}

// --- xadapt plugins ------------------------------------------------------------------------

Test(plugins, cli_lists_refused_files_with_reasons_beside_the_good_plugins) {
    cr_assert_eq(setenv("XADAPT_PLUGIN_PATH", getenv("XADAPT_TEST_PLUGIN_DIR"), 1), 0);
    run_result r = run_xadapt((const char *[]){"plugins", NULL});
    cr_expect_eq(r.status, 0, "refusals are listed, not fatal: %s", r.err);
    char abi_line[64], minor_newer[64];
    snprintf(abi_line, sizeof abi_line, "  plugin test_good 0.0.1, ABI %d.%d\n", XA_ABI_MAJOR,
             XA_ABI_MINOR);
    snprintf(minor_newer, sizeof minor_newer, "minor_newer.so: built for plugin ABI %d.%d",
             XA_ABI_MAJOR, XA_ABI_MINOR + 1);
    const char *expect[] = {
        "search path:\n",
        getenv("XADAPT_TEST_PLUGIN_DIR"),
        plugin_path("good.so"),
        abi_line,
        "    class test_good: identity adapter for the loader tests\n",
        "      sub-modules: a, b\n",
        "      options: layers, gain\n",
        "    class bottleneck: ",
        "\nrefused:\n",
        "bad.so: cannot load as a shared object",
        "good_twin.so: adapter class 'test_good' is already registered by",
        "init_fails.so: init failed: needs libfrobnicate 2.0, found none",
        "major_newer.so: built for plugin ABI 2.",
        minor_newer,
        "no_info.so: init did not fill in its plugin info",
        "no_init.so: no 'xa_plugin_init' symbol",
        "short_class.so: class #0 is incomplete",
        "no_forward.so: class #0 is incomplete",
        "unresolved.so: cannot load as a shared object",
        "undefined symbol: xa_test_symbol_defined_nowhere",
        " refused\n",
    };
    for (size_t i = 0; i < sizeof expect / sizeof *expect; i++)
        cr_expect(strstr(r.out, expect[i]), "output lacks '%s':\n%s", expect[i], r.out);
    // good.so is listed as loaded before the refusals
    const char *ref = strstr(r.out, "\nrefused:\n");
    const char *good = strstr(r.out, "class test_good");
    cr_expect(ref && good && good < ref, "%s", r.out);
    run_free(&r);
}

static const cJSON *find_by(const cJSON *arr, const char *key, const char *suffix) {
    for (const cJSON *e = arr ? arr->child : NULL; e; e = e->next) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, key);
        size_t n = cJSON_IsString(v) ? strlen(v->valuestring) : 0, m = strlen(suffix);
        if (n >= m && !strcmp(v->valuestring + n - m, suffix))
            return e;
    }
    return NULL;
}

Test(plugins, cli_json_has_the_same_plugins_classes_and_refusals) {
    cr_assert_eq(setenv("XADAPT_PLUGIN_PATH", getenv("XADAPT_TEST_PLUGIN_DIR"), 1), 0);
    run_result r = run_xadapt((const char *[]){"plugins", "--json", NULL});
    cr_assert_eq(r.status, 0, "%s", r.err);
    cJSON *root = cJSON_Parse(r.out);
    cr_assert(root, "not JSON:\n%s", r.out);
    const cJSON *path = cJSON_GetObjectItemCaseSensitive(root, "search_path");
    cr_expect(cJSON_IsArray(path) && cJSON_GetArraySize(path) >= 2);
    cr_expect_str_eq(cJSON_GetArrayItem(path, 0)->valuestring, getenv("XADAPT_TEST_PLUGIN_DIR"));
    const cJSON *plugins = cJSON_GetObjectItemCaseSensitive(root, "plugins");
    const cJSON *good = find_by(plugins, "path", "/good.so");
    cr_assert(good, "%s", r.out);
    cr_expect_str_eq(cJSON_GetObjectItemCaseSensitive(good, "name")->valuestring, "test_good");
    cr_expect_eq(cJSON_GetObjectItemCaseSensitive(good, "abi_major")->valueint, XA_ABI_MAJOR);
    const cJSON *cls =
        find_by(cJSON_GetObjectItemCaseSensitive(good, "classes"), "name", "test_good");
    cr_assert(cls, "%s", r.out);
    const cJSON *opts = cJSON_GetObjectItemCaseSensitive(cls, "options");
    cr_expect_eq(cJSON_GetArraySize(opts), 2);
    cr_expect_str_eq(cJSON_GetArrayItem(opts, 1)->valuestring, "gain");
    cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(cls, "submodules")), 2);
    const cJSON *refused = cJSON_GetObjectItemCaseSensitive(root, "refused");
    const cJSON *fails = find_by(refused, "path", "/init_fails.so");
    cr_assert(fails, "%s", r.out);
    cr_expect(strstr(cJSON_GetObjectItemCaseSensitive(fails, "reason")->valuestring,
                     "needs libfrobnicate"));
    cr_expect_not_null(find_by(refused, "path", "/bad.so"));
    cr_expect_null(find_by(plugins, "path", "/bad.so"));
    cJSON_Delete(root);
    run_free(&r);
}

Test(plugins, cli_loads_files_named_on_the_command_line) {
    cr_assert_eq(setenv("XADAPT_PLUGIN_PATH", "", 1), 0);
    run_result r =
        run_xadapt((const char *[]){"plugins", template_path(), "/nonexistent.so", NULL});
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect(strstr(r.out, "class scale: "), "%s", r.out);
    cr_expect(strstr(r.out, "/nonexistent.so: file not found"), "%s", r.out);
    run_free(&r);
}

Test(plugins, cli_help_and_usage_errors) {
    run_result r = run_xadapt((const char *[]){"plugins", "--help", NULL});
    cr_expect_eq(r.status, 0);
    cr_expect(strstr(r.out, "usage: xadapt plugins"), "%s", r.out);
    cr_expect(strstr(r.out, "XADAPT_PLUGIN_PATH"), "%s", r.out);
    run_free(&r);
    r = run_xadapt((const char *[]){"plugins", "--frobnicate", NULL});
    cr_expect_eq(r.status, 2);
    cr_expect(strstr(r.err, "unknown option '--frobnicate'"), "%s", r.err);
    run_free(&r);
    r = run_xadapt((const char *[]){"--help", NULL});
    cr_expect(strstr(r.out, "plugins "), "xadapt --help lists the command: %s", r.out);
    run_free(&r);
}

// --- the template and the example in a net --------------------------------------------------

typedef struct {
    const char *so; // NULL: the template
    const char *cls, *opts;
} plugin_kind;

static const plugin_kind kinds[] = {
    {NULL, "scale", "{\"layers\": [0, 1]}"},
    {NULL, "scale", "{\"layers\": 1}"},
    {"example.so", "ia3", "{}"},
    {"example.so", "ia3", "{\"layers\": [0]}"},
};
#define NKINDS (sizeof kinds / sizeof *kinds)

static void open_with(fixture *f, const plugin_kind *k) {
    cr_assert_eq(setenv("XADAPT_PLUGIN_PATH", "", 1), 0);
    fixture_open(f, false);
    const char *path = k->so ? plugin_path(k->so) : template_path();
    cr_assert_eq(xa_registry_load(f->reg, path), XA_OK, "%s", xa_errmsg(f->ctx));
}

Test(plugins, template_and_example_start_as_the_identity_and_training_changes_them) {
    for (size_t k = 0; k < NKINDS; k++) {
        fixture f;
        open_with(&f, &kinds[k]);
        float *base = copy_of(fixture_forward(&f));
        cr_assert_eq(xa_net_insert(f.net, kinds[k].cls, NULL, kinds[k].opts), XA_OK, "%s",
                     xa_errmsg(f.ctx));
        cr_expect_gt(xa_params_count(xa_net_params(f.net)), 0);
        xa_arena_reset(f.ctx);
        xa_tensor *y = fixture_forward(&f);
        cr_assert(y, "%s", xa_errmsg(f.ctx));
        cr_expect_eq(max_abs_diff(y, base), 0.0f, "%s %s: untrained must be the identity",
                     kinds[k].cls, kinds[k].opts);
        xa_optim *opt = xa_optim_new(f.ctx, xa_net_params(f.net),
                                     &(xa_optim_opts){.kind = XA_OPTIM_ADAMW, .lr = 1e-2f});
        xa_tensor *target = rand_tensor(f.ctx, 2, 7, 32, 0);
        float first = 0, last = 0;
        for (int step = 0; step < 20; step++) {
            xa_arena_reset(f.ctx);
            xa_tensor *loss = xa_mse(f.ctx, fixture_forward(&f), target);
            cr_assert(loss, "%s", xa_errmsg(f.ctx));
            cr_assert_eq(xa_backward(f.ctx, loss), XA_OK, "%s", xa_errmsg(f.ctx));
            cr_assert_eq(xa_optim_step(opt, -1, 1.0f), XA_OK, "%s", xa_errmsg(f.ctx));
            if (step == 0)
                first = loss->data[0];
            last = loss->data[0];
        }
        cr_expect_lt(last, first, "%s: loss %g -> %g", kinds[k].cls, first, last);
        xa_arena_reset(f.ctx);
        y = fixture_forward(&f);
        cr_assert(y, "%s", xa_errmsg(f.ctx));
        cr_expect_gt(max_abs_diff(y, base), 1e-4f, "%s: training must change the output",
                     kinds[k].cls);
        free(base);
        xa_tensor_release(target);
        xa_optim_free(opt);
        fixture_close(&f);
    }
}

Test(plugins, template_and_example_gradients_match_central_differences) {
    for (size_t k = 0; k < NKINDS; k++) {
        fixture f;
        open_with(&f, &kinds[k]);
        cr_assert_eq(xa_net_insert(f.net, kinds[k].cls, NULL, kinds[k].opts), XA_OK, "%s",
                     xa_errmsg(f.ctx));
        fixture_randomize(&f, 0.5f);
        gc_report rep;
        bool ok = fixture_gradcheck(&f, &rep);
        cr_expect(ok, "%s %s: %d of %d off: %s", kinds[k].cls, kinds[k].opts, rep.failed,
                  rep.checked, rep.first_failure);
        fixture_close(&f);
    }
}

Test(plugins, example_is_the_whole_ia3_keys_values_and_activation) {
    fixture f;
    open_with(&f, &kinds[3]);
    cr_assert_eq(xa_net_insert(f.net, "ia3", "e", "{\"layers\": [1]}"), XA_OK, "%s",
                 xa_errmsg(f.ctx));
    xa_params *ps = xa_net_params(f.net);
    const xa_model_config *c = xa_model_config_of(f.plm);
    cr_expect_eq(xa_params_count(ps), 3);
    const char *names[3] = {"e.l1.l_k", "e.l1.l_v", "e.l1.l_ff"};
    int64_t lens[3] = {c->text.hidden, c->text.hidden, c->text.intermediate};
    for (int i = 0; i < 3; i++) {
        xa_tensor *t = xa_params_find(ps, names[i]);
        cr_assert_not_null(t, "%s", names[i]);
        cr_expect_eq(t->numel, lens[i], "%s", names[i]);
    }
    // l_ff really scales the activation: doubling it changes the output
    float *base = copy_of(fixture_forward(&f));
    xa_tensor *l = xa_params_find(ps, "e.l1.l_ff");
    for (int64_t j = 0; j < l->numel; j++)
        l->data[j] = 2.0f;
    xa_arena_reset(f.ctx);
    xa_tensor *y = fixture_forward(&f);
    cr_assert(y, "%s", xa_errmsg(f.ctx));
    cr_expect_gt(max_abs_diff(y, base), 1e-3f);
    free(base);
    fixture_close(&f);
}

Test(plugins, template_saves_and_loads_through_the_host) {
    fixture f;
    open_with(&f, &kinds[0]);
    cr_assert_eq(xa_net_insert(f.net, "scale", "s1", "{\"layers\": [1]}"), XA_OK, "%s",
                 xa_errmsg(f.ctx));
    fixture_randomize(&f, 0.3f);
    cr_expect_str_eq(xa_params_name(xa_net_params(f.net), 0), "s1.l1.g");
    float *y1 = copy_of(fixture_forward(&f));
    char path[4200];
    snprintf(path, sizeof path, "%s/scale.safetensors", make_tmpdir());
    cr_assert_eq(xa_net_save(f.net, path), XA_OK, "%s", xa_errmsg(f.ctx));
    xa_net *n2 = xa_net_new(f.ctx, f.plm, NULL, f.reg);
    cr_assert_eq(xa_net_load(n2, path, false), XA_OK, "%s", xa_errmsg(f.ctx));
    xa_net *keep = f.net;
    f.net = n2;
    xa_arena_reset(f.ctx);
    xa_tensor *y2 = fixture_forward(&f);
    cr_assert(y2, "%s", xa_errmsg(f.ctx));
    cr_expect_eq(max_abs_diff(y2, y1), 0.0f);
    f.net = keep;
    xa_net_free(n2);
    free(y1);
    fixture_close(&f);
}

Test(plugins, template_refuses_bad_options_with_the_hosts_messages) {
    fixture f;
    open_with(&f, &kinds[0]);
    cr_expect_eq(xa_net_insert(f.net, "scale", NULL, "{\"layer\": 1}"), XA_EINVAL);
    cr_expect(strstr(xa_errmsg(f.ctx), "unknown option 'layer' (valid: layers)"), "%s",
              xa_errmsg(f.ctx));
    cr_expect_eq(xa_net_insert(f.net, "scale", NULL, "{\"layers\": [5]}"), XA_ERANGE);
    cr_expect(strstr(xa_errmsg(f.ctx), "layer 5 is outside"), "%s", xa_errmsg(f.ctx));
    cr_expect_eq(xa_net_insert(f.net, "scale", NULL, "{\"layers\": [1, 1]}"), XA_EINVAL);
    cr_expect(strstr(xa_errmsg(f.ctx), "layer 1 is listed twice"), "%s", xa_errmsg(f.ctx));
    cr_expect_eq(xa_net_insert(f.net, "scale", NULL, "{\"layers\": \"all\"}"), XA_EINVAL);
    cr_expect(strstr(xa_errmsg(f.ctx), "'layers' must be an integer or a list"), "%s",
              xa_errmsg(f.ctx));
    cr_expect_eq(xa_params_count(xa_net_params(f.net)), 0, "failed inserts leave nothing");
    cr_expect_eq(xa_net_adapter_count(f.net), 0);
    fixture_close(&f);
}

// ABI 1.2 only added a site: a plugin built for 1.1 loads and works as before.
Test(plugins, a_plugin_built_for_abi_1_1_loads_and_runs) {
    fixture f;
    open_with(&f, &(plugin_kind){"minor_older.so", "test_good", NULL});
    const xa_plugin_record *from = NULL;
    cr_assert_not_null(xa_registry_find(f.reg, "test_good", &from));
    cr_expect(from->abi_major == 1 && from->abi_minor == 1, "ABI %u.%u", from->abi_major,
              from->abi_minor);
    float *base = copy_of(fixture_forward(&f));
    cr_assert_eq(xa_net_insert(f.net, "test_good", "old", "{\"layers\": [0, 1]}"), XA_OK, "%s",
                 xa_errmsg(f.ctx));
    xa_arena_reset(f.ctx);
    xa_tensor *y = fixture_forward(&f);
    cr_assert(y, "%s", xa_errmsg(f.ctx));
    cr_expect_eq(max_abs_diff(y, base), 0.0f);
    free(base);
    fixture_close(&f);
}

// --- forward mistakes, stopped at the adapter ---------------------------------------------------

// Insert test_mistakes with `opts` and run one forward: it must fail with `code` and a message
// holding each of `want` (the adapter, where it ran, what was wrong).
static void expect_forward_fails(const char *opts, xa_status code, const char *const *want) {
    fixture f;
    open_with(&f, &(plugin_kind){"mistakes.so", "test_mistakes", NULL});
    cr_assert_eq(xa_net_insert(f.net, "test_mistakes", "oops", opts), XA_OK, "%s",
                 xa_errmsg(f.ctx));
    cr_expect_null(fixture_forward(&f), "%s: the forward went on", opts);
    cr_expect_eq(xa_errcode(f.ctx), code, "%s: status %s (%s)", opts,
                 xa_status_name(xa_errcode(f.ctx)), xa_errmsg(f.ctx));
    for (; *want; want++)
        cr_expect(strstr(xa_errmsg(f.ctx), *want), "%s: message lacks '%s': %s", opts, *want,
                  xa_errmsg(f.ctx));
    fixture_close(&f);
}

Test(plugins, a_forward_of_the_wrong_shape_is_refused_naming_the_adapter_and_both_shapes) {
    // the fixture's batch is (2, 7) on a hidden size of 32
    expect_forward_fails("{\"mistake\": \"shape\"}", XA_ESHAPE,
                         (const char *[]){"test_mistakes 'oops': forward at layer 0 (v)",
                                          "returned a (2,6,32) tensor, expected (2,7,32)", NULL});
    expect_forward_fails("{\"mistake\": \"rank\", \"at\": \"out\"}", XA_ESHAPE,
                         (const char *[]){"test_mistakes 'oops': forward at layer 0 (out)",
                                          "returned a (14,32) tensor, expected (2,7,32)", NULL});
    expect_forward_fails("{\"mistake\": \"shape\", \"at\": \"replace\"}", XA_ESHAPE,
                         (const char *[]){"test_mistakes 'oops': forward at layer 0 (v)",
                                          "expected (2,7,32)", NULL});
    expect_forward_fails("{\"mistake\": \"shape\", \"at\": \"side\"}", XA_ESHAPE,
                         (const char *[]){"test_mistakes 'oops': side forward",
                                          "returned a (2,6,32) tensor, expected (2,7,32)", NULL});
}

Test(plugins, a_failing_forward_is_named_with_its_site_also_when_the_plugin_says_nothing) {
    expect_forward_fails(
        "{\"mistake\": \"op\"}", XA_ESHAPE,
        (const char *[]){"test_mistakes 'oops': forward at layer 0 (v): mul_row", NULL});
    expect_forward_fails("{\"mistake\": \"null\"}", XA_EPLUGIN,
                         (const char *[]){"test_mistakes 'oops': forward at layer 0 (v) returned "
                                          "nothing without a message",
                                          NULL});
    // a replaced projection that comes back empty used to end the pass without any message
    expect_forward_fails("{\"mistake\": \"null\", \"at\": \"replace\"}", XA_EPLUGIN,
                         (const char *[]){"test_mistakes 'oops': forward at layer 0 (v) returned "
                                          "nothing without a message",
                                          NULL});
}

Test(plugins, a_forward_without_mistakes_passes_the_hosts_checks) {
    static const char *const at[] = {"v", "out", "act", "replace", "side"};
    for (size_t i = 0; i < sizeof at / sizeof *at; i++) {
        fixture f;
        open_with(&f, &(plugin_kind){"mistakes.so", "test_mistakes", NULL});
        char opts[64];
        snprintf(opts, sizeof opts, "{\"at\": \"%s\"}", at[i]);
        cr_assert_eq(xa_net_insert(f.net, "test_mistakes", "fine", opts), XA_OK, "%s",
                     xa_errmsg(f.ctx));
        cr_expect(fixture_forward(&f), "%s: %s", opts, xa_errmsg(f.ctx));
        fixture_close(&f);
    }
}

// --- the act site (ABI 1.2): the feed-forward activation, FF2's input ---------------------------

// Hooks for xa_text_forward that stand outside the net: rescale the activation at the act site
// by l[layer], or compute FF2 themselves from a weight whose columns were scaled by l (w2l).
typedef struct {
    xa_model *m;
    xa_tensor *l[2], *w2l[2];
    bool identity; // the act hook hands back what it got
} act_hooks;

static xa_tensor *act_hook(xa_ctx *ctx, void *user, int layer, xa_site s, xa_tensor *h,
                           xa_tensor *x) {
    const act_hooks *k = user;
    cr_assert_eq(s, XA_SITE_ACT, "only the act site is enabled, %s was called", xa_site_name(s));
    cr_assert_eq(h->shape[2], k->l[layer]->numel, "act sees (B, T, intermediate)");
    cr_assert(x && x->ndim == 3 && x->shape[2] == h->shape[2], "x is FF1's output");
    return k->identity ? h : xa_mul_row(ctx, h, k->l[layer]);
}

static xa_tensor *ff2_hook(xa_ctx *ctx, void *user, int layer, xa_site s, xa_tensor *h,
                           xa_tensor *x) {
    const act_hooks *k = user;
    cr_assert(s == XA_SITE_FF2 && !h, "FF2 is replaced, nothing else is hooked");
    return xa_linear(ctx, x, k->w2l[layer], xa_model_block(k->m, layer)->b2);
}

// l[i] ~ U(0.5, 1.5) per block, and w2l[i] = W2 diag(l[i]) computed here, not by the host.
static void act_hooks_init(xa_ctx *ctx, act_hooks *k, xa_model *m, const xa_tensor *const *l) {
    memset(k, 0, sizeof *k);
    k->m = m;
    for (int i = 0; i < 2; i++) {
        const xa_tensor *w2 = xa_model_block(m, i)->w2; // (hidden, intermediate)
        int64_t H = w2->shape[0], I = w2->shape[1];
        k->l[i] = xa_tensor_new(ctx, 1, (int64_t[]){I});
        if (l)
            memcpy(k->l[i]->data, l[i]->data, (size_t)I * sizeof(float));
        else
            fill_uniform(ctx, k->l[i], 0.5f, 1.5f);
        k->w2l[i] = xa_tensor_new(ctx, 2, w2->shape);
        for (int64_t o = 0; o < H; o++)
            for (int64_t j = 0; j < I; j++)
                k->w2l[i]->data[o * I + j] = w2->data[o * I + j] * k->l[i]->data[j];
    }
}

static void act_hooks_free(act_hooks *k) {
    for (int i = 0; i < 2; i++)
        xa_tensor_release(k->l[i]), xa_tensor_release(k->w2l[i]);
}

// The last hidden state of `m` with `hooks` (NULL: none), as a heap copy.
static float *last_with(xa_ctx *ctx, xa_model *m, const xa_text_batch *b, const xa_hooks *hooks) {
    xa_arena_reset(ctx);
    xa_text_out out;
    xa_forward_opts o = {.hooks = hooks};
    cr_assert_eq(xa_text_forward(ctx, m, b, &o, &out), XA_OK, "%s", xa_errmsg(ctx));
    return copy_of(out.last);
}

static float max_diff(const float *a, const float *b, int64_t n) {
    float d = 0;
    for (int64_t i = 0; i < n; i++)
        d = fmaxf(d, fabsf(a[i] - b[i]));
    return d;
}

// CLIP's text tower is the pre-LN block with quick_gelu (BERT's, post-LN with gelu, is checked
// through the net below): a * l at the act site is FF2 with its columns scaled by l, and an
// identity hook there changes no bit.
Test(plugins, act_site_in_clip_blocks_scales_like_ff2_columns_and_identity_changes_nothing) {
    xa_ctx *ctx = xa_ctx_new();
    xa_ctx_seed(ctx, 7);
    xa_model *m;
    cr_assert_eq(xa_model_load(ctx, src_path("tests/golden/fixtures/clip_tiny"), &m), XA_OK, "%s",
                 xa_errmsg(ctx));
    int32_t ids[2 * 6] = {0, 5, 17, 33, 2, 1, 0, 9, 44, 2, 1, 1};
    float mask[2 * 6] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0};
    xa_text_batch b = {.ids = ids, .mask = mask, .B = 2, .T = 6};
    act_hooks k;
    act_hooks_init(ctx, &k, m, NULL);
    const uint32_t act[2] = {1u << XA_SITE_ACT, 1u << XA_SITE_ACT},
                   ff2[2] = {1u << XA_SITE_FF2, 1u << XA_SITE_FF2};
    int64_t n = 2 * 6 * xa_model_config_of(m)->text.hidden;
    float *plain = last_with(ctx, m, &b, NULL);
    float *scaled = last_with(ctx, m, &b, &(xa_hooks){.fn = act_hook, .user = &k, .enabled = act});
    float *want = last_with(ctx, m, &b, &(xa_hooks){.fn = ff2_hook, .user = &k, .replace = ff2});
    cr_expect_lt(max_diff(scaled, want, n), 1e-5f, "a * l at act vs (W2 diag l) a: %g",
                 max_diff(scaled, want, n));
    cr_expect_gt(max_diff(scaled, plain, n), 1e-3f, "l must change the output");
    k.identity = true;
    float *same = last_with(ctx, m, &b, &(xa_hooks){.fn = act_hook, .user = &k, .enabled = act});
    cr_expect_eq(memcmp(same, plain, (size_t)n * sizeof(float)), 0,
                 "an identity hook at act changed the output by %g", max_diff(same, plain, n));
    free(plain), free(scaled), free(want), free(same);
    act_hooks_free(&k);
    xa_model_free(m);
    xa_ctx_free(ctx);
}

static const plugin_kind act_scale = {"act_scale.so", "test_act_scale", NULL};

// Through the net and the plugin ABI, on BERT (post-LN, gelu): the same equality, with the
// expected value from FF2 computed outside the host.
Test(plugins, act_site_rescaling_by_l_equals_ff2_with_its_columns_scaled_by_l) {
    fixture f;
    open_with(&f, &act_scale);
    cr_assert_eq(xa_net_insert(f.net, "test_act_scale", "l", NULL), XA_OK, "%s", xa_errmsg(f.ctx));
    xa_params *ps = xa_net_params(f.net);
    xa_tensor *l[2] = {xa_params_find(ps, "l.l0.l_ff"), xa_params_find(ps, "l.l1.l_ff")};
    cr_assert(l[0] && l[1], "parameters l.l<i>.l_ff");
    cr_assert_eq(l[0]->numel, xa_model_config_of(f.plm)->text.intermediate);
    for (int i = 0; i < 2; i++)
        fill_uniform(f.ctx, l[i], 0.5f, 1.5f);
    xa_tensor *y = fixture_forward(&f);
    cr_assert(y, "%s", xa_errmsg(f.ctx));
    float *got = copy_of(y);
    act_hooks k;
    act_hooks_init(f.ctx, &k, f.plm, (const xa_tensor *const *)l);
    const uint32_t ff2[2] = {1u << XA_SITE_FF2, 1u << XA_SITE_FF2};
    float *want = last_with(f.ctx, f.plm, &f.batch.text,
                            &(xa_hooks){.fn = ff2_hook, .user = &k, .replace = ff2});
    float *plain = last_with(f.ctx, f.plm, &f.batch.text, NULL);
    cr_expect_lt(max_diff(got, want, y->numel), 1e-5f, "%g", max_diff(got, want, y->numel));
    cr_expect_gt(max_diff(got, plain, y->numel), 1e-3f, "l must change the output");
    free(got), free(want), free(plain);
    act_hooks_free(&k);
    fixture_close(&f);
}

// l = 1 and a hook that hands back args->h itself: both bit for bit the model without a hook,
// and the hook did run (its parameter gets a gradient).
Test(plugins, identity_hooks_at_the_act_site_leave_the_output_bit_identical) {
    fixture f;
    open_with(&f, &act_scale);
    float *base = copy_of(fixture_forward(&f));
    cr_assert_eq(xa_net_insert(f.net, "test_act_scale", "l", NULL), XA_OK, "%s", xa_errmsg(f.ctx));
    xa_arena_reset(f.ctx);
    xa_tensor *y = fixture_forward(&f);
    cr_assert(y, "%s", xa_errmsg(f.ctx));
    cr_expect_eq(memcmp(y->data, base, (size_t)y->numel * sizeof(float)), 0, "%g",
                 max_abs_diff(y, base));
    xa_tensor *target = rand_tensor(f.ctx, 2, 7, 32, 0);
    cr_assert_eq(xa_backward(f.ctx, xa_mse(f.ctx, y, target)), XA_OK, "%s", xa_errmsg(f.ctx));
    xa_tensor *l0 = xa_params_find(xa_net_params(f.net), "l.l0.l_ff");
    const float *g = xa_tensor_grad(f.ctx, l0);
    float norm = 0;
    for (int64_t i = 0; i < l0->numel; i++)
        norm += fabsf(g[i]);
    cr_expect_gt(norm, 0.0f, "the act hook never ran: its parameter has no gradient");
    xa_tensor_release(target);
    fixture_close(&f);

    open_with(&f, &(plugin_kind){"mistakes.so", "test_mistakes", NULL});
    cr_assert_eq(xa_net_insert(f.net, "test_mistakes", "same", "{\"at\": \"act\"}"), XA_OK, "%s",
                 xa_errmsg(f.ctx));
    y = fixture_forward(&f);
    cr_assert(y, "%s", xa_errmsg(f.ctx));
    cr_expect_eq(memcmp(y->data, base, (size_t)y->numel * sizeof(float)), 0, "%g",
                 max_abs_diff(y, base));
    free(base);
    fixture_close(&f);
}

// l at the act site, and LoRA on FF1 below it so its gradient flows back through the hooked
// nonlinearity, against central differences.
Test(plugins, act_site_gradients_match_central_differences) {
    fixture f;
    open_with(&f, &act_scale);
    cr_assert_eq(xa_net_insert(f.net, "test_act_scale", "l", NULL), XA_OK, "%s", xa_errmsg(f.ctx));
    cr_assert_eq(xa_net_insert(f.net, "lora", "lo",
                               "{\"targets\": [\"ff1\"], \"rank\": 2, \"layers\": [1]}"),
                 XA_OK, "%s", xa_errmsg(f.ctx));
    fixture_randomize(&f, 0.5f);
    gc_report rep;
    bool ok = fixture_gradcheck(&f, &rep);
    cr_expect(ok, "%d of %d off: %s", rep.failed, rep.checked, rep.first_failure);
    cr_expect_gt(rep.checked, 2 * 37, "every element of l0 and l1, and LoRA's");
    fixture_close(&f);
}

Test(plugins, act_site_forward_of_the_wrong_shape_is_refused) {
    // bert_tiny's intermediate size is 37
    expect_forward_fails("{\"mistake\": \"shape\", \"at\": \"act\"}", XA_ESHAPE,
                         (const char *[]){"test_mistakes 'oops': forward at layer 0 (act)",
                                          "returned a (2,6,37) tensor, expected (2,7,37)",
                                          "(the shape of args->h)", NULL});
}

Test(plugins, attaching_past_the_last_site_is_refused_naming_every_site) {
    fixture f;
    open_with(&f, &(plugin_kind){"mistakes.so", "test_mistakes", NULL});
    cr_expect_eq(xa_net_insert(f.net, "test_mistakes", "oops", "{\"at\": \"nowhere\"}"), XA_EINVAL);
    cr_expect(strstr(xa_errmsg(f.ctx), "unknown insertion point 10 (sites are 0 attn, 1 ffn"), "%s",
              xa_errmsg(f.ctx));
    cr_expect(strstr(xa_errmsg(f.ctx), "8 ff2, 9 act)"), "%s", xa_errmsg(f.ctx));
    cr_expect_eq(xa_net_adapter_count(f.net), 0);
    fixture_close(&f);
}
