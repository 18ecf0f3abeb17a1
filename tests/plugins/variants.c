// Small plugins for the loader tests (tests/test_plugins.c), one per way a file can be refused,
// and one good one. tests/plugins/meson.build compiles this file once per variant with
// -DVARIANT_<NAME>; only VARIANT_UNRESOLVED is linked without -z defs (so it can be built at all).
// None is installed or lands in build/adapters, so scans of the real adapters never see them.
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "xadapt/plugin.h"

static const xa_host_api *H;

// A working class: an identity adapter at the block outputs of the chosen layers. Its options and
// sub-modules exist so that `xadapt plugins` has something to list.
static const char *const options[] = {"layers", "gain", NULL};
static const char *const submodules[] = {"a", "b", NULL};

static int create(xa_adapter *a, const xa_opts *o) {
    int64_t layers[64];
    int n = H->opt_ints(o, "layers", layers, 64);
    for (int i = 0; i < n && i < 64; i++)
        if (H->attach(a, (int)layers[i], XA_AT_OUT) != 0)
            return -1;
    return 0;
}

#if !defined(VARIANT_NO_FORWARD)
static xa_tensor *forward(xa_adapter *a, const xa_site_args *args) {
    (void)a;
    return args->h;
}
#endif

static void destroy(xa_adapter *a) {
    (void)a;
}

#if defined(VARIANT_SHORT_CLASS)
// As if built against a header whose class struct ended after `description`.
#define CLASS_SIZE (offsetof(xa_adapter_class, description) + sizeof(const char *))
#else
#define CLASS_SIZE sizeof(xa_adapter_class)
#endif

static const xa_adapter_class test_class = {
    .struct_size = CLASS_SIZE,
    .name = "test_good", // VARIANT_GOOD_TWIN registers the same name: a duplicate
    .description = "identity adapter for the loader tests",
    .submodules = submodules,
    .options = options,
    .create = create,
#if !defined(VARIANT_NO_FORWARD) // a class must have a forward
    .forward = forward,
#endif
    .destroy = destroy,
};

static const xa_adapter_class *const classes[] = {&test_class, NULL};

#if defined(VARIANT_UNRESOLVED)
// Defined nowhere: dlopen(RTLD_NOW) must refuse the file and say which symbol is missing.
extern int xa_test_symbol_defined_nowhere(void);
#endif

#if defined(VARIANT_NO_INIT)
// The init function exists but is not exported (XA_PLUGIN_EXPORT forgotten, so hidden
// visibility keeps it private): the loader cannot find the symbol.
int xa_plugin_init(const xa_host_api *host, xa_plugin_info *info, char **errmsg);
int xa_plugin_init(const xa_host_api *host, xa_plugin_info *info, char **errmsg)
#else
XA_PLUGIN_EXPORT int xa_plugin_init(const xa_host_api *host, xa_plugin_info *info, char **errmsg)
#endif
{
    H = host;
    (void)errmsg;
#if defined(VARIANT_NO_INFO)
    (void)info, (void)classes; // forgot XA_PLUGIN_INFO_INIT and still reports success
    return 0;
#else
    XA_PLUGIN_INFO_INIT(info, "test_" VARIANT_NAME, "0.0.1", classes);
#if defined(VARIANT_MAJOR_NEWER)
    info->abi_major = XA_ABI_MAJOR + 1;
#elif defined(VARIANT_MINOR_NEWER)
    info->abi_minor = XA_ABI_MINOR + 1;
#elif defined(VARIANT_MINOR_OLDER)
    info->abi_minor = 1; // what XA_PLUGIN_INFO_INIT wrote before 1.2 (no struct it uses changed)
#elif defined(VARIANT_INIT_FAILS)
    *errmsg = strdup("needs libfrobnicate 2.0, found none");
    return 1;
#elif defined(VARIANT_NO_CLASSES)
    info->classes = NULL;
#elif defined(VARIANT_UNRESOLVED)
    return xa_test_symbol_defined_nowhere();
#endif
    return 0;
#endif
}
