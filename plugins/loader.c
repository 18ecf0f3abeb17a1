// The plugin registry: finds adapter plugins on the search path, dlopens them RTLD_NOW |
// RTLD_LOCAL, checks the ABI both ways, runs their init and records every class they register.
// A file that cannot be used is refused with its path and the reason, never a crash.
#include <dirent.h>
#include <stddef.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "net_internal.h"

#ifndef XADAPT_BUILD_PLUGIN_DIR
#define XADAPT_BUILD_PLUGIN_DIR ""
#endif
#ifndef XADAPT_BUILD_LIB_DIR
#define XADAPT_BUILD_LIB_DIR ""
#endif
#ifndef XADAPT_INSTALL_PLUGIN_DIR
#define XADAPT_INSTALL_PLUGIN_DIR "/usr/local/lib/xadapt/plugins"
#endif

// The class struct as ABI 1.0 first defined it ends after `destroy`.
#define XA_CLASS_MIN_SIZE (offsetof(xa_adapter_class, destroy) + sizeof(void (*)(void)))

typedef struct {
    xa_plugin_record rec;
    void *handle;
    xa_plugin_info info;
    char *path, *refused;
} plugin;

struct xa_registry {
    xa_ctx *ctx;
    plugin *p;
    size_t n, cap;
    char *path;
    char *names;
};

xa_registry *xa_registry_new(xa_ctx *ctx) {
    xa_registry *r = xa_calloc(ctx, 1, sizeof *r);
    if (r)
        r->ctx = ctx;
    return r;
}

void xa_registry_free(xa_registry *r) {
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++) {
        if (r->p[i].handle)
            dlclose(r->p[i].handle);
        free(r->p[i].path);
        free(r->p[i].refused);
    }
    free(r->p);
    free(r->path);
    free(r->names);
    free(r);
}

static plugin *add_record(xa_registry *r, const char *path) {
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 8;
        plugin *p = realloc(r->p, cap * sizeof *p);
        if (!p)
            return NULL;
        r->p = p, r->cap = cap;
    }
    plugin *p = &r->p[r->n];
    memset(p, 0, sizeof *p);
    if (!(p->path = strdup(path)))
        return NULL;
    r->n++;
    p->rec.path = p->path;
    return p;
}

// Refuse: keep the record with its reason, set the message, unload.
XA_PRINTF(4, 5)
static xa_status refuse(xa_registry *r, plugin *p, xa_status code, const char *fmt, ...) {
    char why[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    p->refused = strdup(why);
    p->rec.refused = p->refused;
    p->rec.name = p->rec.version = NULL;
    p->rec.classes = NULL;
    if (p->handle)
        dlclose(p->handle);
    p->handle = NULL;
    return xa_errorf(r->ctx, code, "plugin %s refused: %s", p->path, why);
}

static bool same_file_loaded(xa_registry *r, const char *path) {
    char real[4096];
    if (!realpath(path, real))
        return false;
    for (size_t i = 0; i < r->n; i++) {
        char other[4096];
        if (r->p[i].handle && realpath(r->p[i].path, other) && !strcmp(other, real))
            return true;
    }
    return false;
}

xa_status xa_registry_load(xa_registry *r, const char *path) {
    if (same_file_loaded(r, path))
        return XA_OK;
    plugin *p = add_record(r, path);
    if (!p)
        return xa_errorf(r->ctx, XA_ENOMEM, "out of memory loading plugin %s", path);
    struct stat st;
    if (stat(path, &st) != 0)
        return refuse(r, p, XA_EPLUGIN, "%s",
                      errno == ENOENT ? "file not found" : strerror(errno)); // ELOOP, EACCES, ...
    dlerror();
    p->handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!p->handle) {
        const char *e = dlerror();
        return refuse(r, p, XA_EPLUGIN, "cannot load as a shared object: %s", e ? e : "?");
    }
    xa_plugin_init_fn init = (xa_plugin_init_fn)dlsym(p->handle, XA_PLUGIN_INIT_SYMBOL);
    if (!init)
        return refuse(r, p, XA_EPLUGIN,
                      "no '%s' symbol (is it an xadapt plugin, built with XA_PLUGIN_EXPORT?)",
                      XA_PLUGIN_INIT_SYMBOL);
    p->info.struct_size = sizeof p->info;
    char *errmsg = NULL;
    int rc = init(xa_host_api_get(), &p->info, &errmsg);
    if (p->info.abi_major == 0 && rc == 0) {
        free(errmsg);
        return refuse(r, p, XA_EABI, "init did not fill in its plugin info (XA_PLUGIN_INFO_INIT)");
    }
    if (p->info.abi_major != 0 && p->info.abi_major != XA_ABI_MAJOR) {
        free(errmsg);
        return refuse(r, p, XA_EABI,
                      "built for plugin ABI %u.%u, this xadapt speaks %d.%d (major versions must "
                      "match: rebuild the plugin against this xadapt's headers)",
                      p->info.abi_major, p->info.abi_minor, XA_ABI_MAJOR, XA_ABI_MINOR);
    }
    if (p->info.abi_minor > XA_ABI_MINOR) {
        free(errmsg);
        return refuse(r, p, XA_EABI,
                      "built for plugin ABI %u.%u, newer than this xadapt's %d.%d (upgrade xadapt "
                      "or rebuild the plugin against these headers)",
                      p->info.abi_major, p->info.abi_minor, XA_ABI_MAJOR, XA_ABI_MINOR);
    }
    if (rc != 0) {
        xa_status s = refuse(r, p, XA_EPLUGIN, "init failed: %s", errmsg ? errmsg : "(no message)");
        free(errmsg);
        return s;
    }
    free(errmsg);
    if (!p->info.name || !p->info.classes)
        return refuse(r, p, XA_EPLUGIN, "init succeeded but set no name or no classes");
    for (size_t k = 0; p->info.classes[k]; k++) {
        const xa_adapter_class *c = p->info.classes[k];
        // Classes may be older (smaller) than the host's struct: trailing members are absent.
        if (c->struct_size < XA_CLASS_MIN_SIZE || !c->name || !c->create || !c->forward)
            return refuse(r, p, XA_EABI,
                          "class #%zu is incomplete (struct_size %zu, at least %zu; name, create "
                          "and forward are required)",
                          k, c->struct_size, (size_t)XA_CLASS_MIN_SIZE);
        for (size_t j = 0; j < k; j++)
            if (!strcmp(p->info.classes[j]->name, c->name))
                return refuse(r, p, XA_EPLUGIN, "registers adapter class '%s' twice", c->name);
    }
    // The same plugin found again later on the search path (an installed copy behind
    // XADAPT_PLUGIN_PATH, say) is shadowed by the first one, as PATH shadows programs.
    for (size_t i = 0; i + 1 < r->n; i++)
        if (r->p[i].handle && !strcmp(r->p[i].info.name, p->info.name)) {
            refuse(r, p, XA_EPLUGIN, "shadowed by %s (same plugin '%s')", r->p[i].path,
                   p->info.name);
            xa_error_clear(r->ctx); // not an error: the first copy is in use
            return XA_OK;
        }
    for (size_t k = 0; p->info.classes[k]; k++) {
        const xa_adapter_class *c = p->info.classes[k];
        for (size_t i = 0; i + 1 < r->n; i++)
            for (size_t j = 0; r->p[i].handle && r->p[i].info.classes[j]; j++)
                if (!strcmp(r->p[i].info.classes[j]->name, c->name))
                    return refuse(r, p, XA_EPLUGIN,
                                  "adapter class '%s' is already registered by %s", c->name,
                                  r->p[i].path);
    }
    p->rec.name = p->info.name;
    p->rec.version = p->info.version ? p->info.version : "?";
    p->rec.abi_major = p->info.abi_major;
    p->rec.abi_minor = p->info.abi_minor;
    p->rec.classes = p->info.classes;
    return XA_OK;
}

static void scan_dir(xa_registry *r, const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        return;
    // sorted, so the order (and which duplicate wins) does not depend on the file system
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 4 || strcmp(e->d_name + len - 3, ".so"))
            continue;
        if (n == cap) {
            char **nn = realloc(names, (cap = cap ? 2 * cap : 16) * sizeof *nn);
            if (!nn)
                break;
            names = nn;
        }
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (strcmp(names[i], names[j]) > 0) {
                char *t = names[i];
                names[i] = names[j], names[j] = t;
            }
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        xa_registry_load(r, path); // refusals are recorded
        free(names[i]);
    }
    free(names);
}

// The build tree's adapters/ is searched only by a libxadapt that runs from the build tree, so
// an installed xadapt never mixes in plugins from a build directory that happens to exist.
static const char *build_plugin_dir(void) {
    static const char *dir;
    static bool done;
    if (done)
        return dir;
    done = true;
    dir = "";
    Dl_info di;
    char lib[4096], want[4096];
    if (!*XADAPT_BUILD_PLUGIN_DIR || !dladdr((void *)xa_registry_new, &di) || !di.dli_fname ||
        !realpath(di.dli_fname, lib) || !realpath(XADAPT_BUILD_LIB_DIR, want))
        return dir;
    char *slash = strrchr(lib, '/');
    if (slash)
        *slash = '\0';
    if (!strcmp(lib, want))
        dir = XADAPT_BUILD_PLUGIN_DIR;
    return dir;
}

const char *xa_registry_path(xa_registry *r) {
    if (!r->path) {
        const char *build = build_plugin_dir();
        const char *env = getenv("XADAPT_PLUGIN_PATH");
        size_t len = (env ? strlen(env) : 0) + strlen(build) + strlen(XADAPT_INSTALL_PLUGIN_DIR) + 4;
        r->path = malloc(len);
        if (!r->path)
            return "";
        snprintf(r->path, len, "%s%s%s%s%s", env && *env ? env : "", env && *env ? ":" : "",
                 build, *build ? ":" : "",
                 XADAPT_INSTALL_PLUGIN_DIR);
    }
    return r->path;
}

xa_status xa_registry_scan(xa_registry *r) {
    char *path = strdup(xa_registry_path(r));
    if (!path)
        return xa_errorf(r->ctx, XA_ENOMEM, "out of memory");
    for (char *dir = strtok(path, ":"); dir; dir = strtok(NULL, ":"))
        if (*dir)
            scan_dir(r, dir);
    free(path);
    xa_error_clear(r->ctx); // refusals stay in the records
    return XA_OK;
}

size_t xa_registry_count(const xa_registry *r) { return r->n; }
const xa_plugin_record *xa_registry_at(const xa_registry *r, size_t i) {
    return i < r->n ? &r->p[i].rec : NULL;
}

const xa_adapter_class *xa_registry_find(const xa_registry *r, const char *cls,
                                         const xa_plugin_record **from) {
    for (size_t i = 0; i < r->n; i++)
        for (size_t j = 0; r->p[i].handle && r->p[i].info.classes[j]; j++)
            if (!strcmp(r->p[i].info.classes[j]->name, cls)) {
                if (from)
                    *from = &r->p[i].rec;
                return r->p[i].info.classes[j];
            }
    return NULL;
}

const char *xa_registry_class_names(xa_registry *r) {
    size_t len = 1;
    for (size_t i = 0; i < r->n; i++)
        for (size_t j = 0; r->p[i].handle && r->p[i].info.classes[j]; j++)
            len += strlen(r->p[i].info.classes[j]->name) + 2;
    free(r->names);
    r->names = calloc(1, len);
    if (!r->names)
        return "";
    for (size_t i = 0; i < r->n; i++)
        for (size_t j = 0; r->p[i].handle && r->p[i].info.classes[j]; j++) {
            if (r->names[0])
                strcat(r->names, ", ");
            strcat(r->names, r->p[i].info.classes[j]->name);
        }
    return r->names[0] ? r->names : "(none loaded)";
}
