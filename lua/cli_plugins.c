// `xadapt plugins [--json] [FILE.so...]`: the plugin search path, every plugin the registry
// loaded (file, name, version, ABI, and each class with its sub-modules and options) and every
// file it refused with the reason. Finding and checking plugins is the library's
// (plugins/loader.c); this file only formats. Refusals are listed, not fatal: exit 0.
#include "cli.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "xadapt/net.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: xadapt plugins [--json] [FILE.so...]\n"
            "\n"
            "List the adapter plugins on the search path: each file that loaded with its plugin\n"
            "name, version and ABI, and the adapter classes it registers with their sub-modules\n"
            "and options; then each file that was refused, with the reason. Refusals do not\n"
            "change the exit status (0); only an error that stops the listing does (1).\n"
            "\n"
            "The search path is $XADAPT_PLUGIN_PATH (':'-separated directories), the build\n"
            "tree's adapters/, then the install directory; every *.so in them is tried.\n"
            "\n"
            "  FILE.so  load these files first (e.g. a plugin you just built)\n"
            "  --json   print the same as one JSON object\n"
            "  --help   this text\n");
}

// Paths and refusal messages come from the file system and dlerror: show control bytes escaped
// so a file name cannot drive the terminal.
static void put_text(const char *s) {
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\n')
            fputs("\\n", stdout);
        else if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
}

static void put_list(const char *label, const char *const *v) {
    if (!v || !v[0])
        return;
    printf("      %s: ", label);
    for (size_t i = 0; v[i]; i++) {
        if (i)
            fputs(", ", stdout);
        put_text(v[i]);
    }
    putchar('\n');
}

// The registry tells which plugin registered a class only through lookups: split its list of
// every class name (", "-separated, "(none loaded)" when empty) and find each one. The result
// (caller frees) is in registration order; NULL when memory runs out.
typedef struct {
    const xa_adapter_class *cls;
    const xa_plugin_record *from;
} class_entry;

static class_entry *collect_classes(xa_registry *r, size_t *count) {
    *count = 0;
    char *names = strdup(xa_registry_class_names(r));
    if (!names)
        return NULL;
    size_t cap = 1;
    for (const char *p = names; (p = strstr(p, ", ")); p += 2)
        cap++;
    class_entry *v = calloc(cap, sizeof *v);
    if (!v) {
        free(names);
        return NULL;
    }
    for (char *p = names; p && *count < cap;) {
        char *next = strstr(p, ", ");
        if (next)
            *next = '\0';
        const xa_plugin_record *from = NULL;
        const xa_adapter_class *c = xa_registry_find(r, p, &from);
        if (c)
            v[(*count)++] = (class_entry){c, from};
        p = next ? next + 2 : NULL;
    }
    free(names);
    return v;
}

static bool dir_exists(const char *dir) {
    struct stat st;
    return stat(dir, &st) == 0 && S_ISDIR(st.st_mode);
}

static void print_text(xa_registry *r, const class_entry *cls, size_t ncls) {
    printf("search path:\n");
    char *path = strdup(xa_registry_path(r));
    for (char *dir = path ? strtok(path, ":") : NULL; dir; dir = strtok(NULL, ":")) {
        printf("  ");
        put_text(dir);
        printf("%s\n", dir_exists(dir) ? "" : " (no such directory)");
    }
    free(path);
    size_t loaded = 0, refused = 0;
    for (size_t i = 0; i < xa_registry_count(r); i++) {
        const xa_plugin_record *p = xa_registry_at(r, i);
        if (p->refused) {
            refused++;
            continue;
        }
        loaded++;
        printf("\n");
        put_text(p->path);
        printf("\n  plugin ");
        put_text(p->name);
        printf(" ");
        put_text(p->version);
        printf(", ABI %u.%u\n", (unsigned)p->abi_major, (unsigned)p->abi_minor);
        for (size_t k = 0; k < ncls; k++) {
            if (cls[k].from != p)
                continue;
            printf("    class ");
            put_text(cls[k].cls->name);
            if (cls[k].cls->description) {
                printf(": ");
                put_text(cls[k].cls->description);
            }
            putchar('\n');
            put_list("sub-modules", cls[k].cls->submodules);
            put_list("options", cls[k].cls->options);
        }
    }
    if (refused) {
        printf("\nrefused:\n");
        for (size_t i = 0; i < xa_registry_count(r); i++) {
            const xa_plugin_record *p = xa_registry_at(r, i);
            if (!p->refused)
                continue;
            printf("  ");
            put_text(p->path);
            printf(": ");
            put_text(p->refused);
            putchar('\n');
        }
    }
    printf("\n%zu plugin%s loaded (%zu class%s), %zu refused\n", loaded, loaded == 1 ? "" : "s",
           ncls, ncls == 1 ? "" : "es", refused);
}

static cJSON *json_strings(const char *const *v) {
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && v && v[i]; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(v[i]));
    return a;
}

// NULL when memory runs out (cJSON reports nothing else).
static char *print_json(xa_registry *r, const class_entry *cls, size_t ncls) {
    cJSON *root = cJSON_CreateObject();
    cJSON *search = cJSON_AddArrayToObject(root, "search_path");
    cJSON *plugins = cJSON_AddArrayToObject(root, "plugins");
    cJSON *refused = cJSON_AddArrayToObject(root, "refused");
    char *path = strdup(xa_registry_path(r));
    if (!search || !plugins || !refused || !path)
        goto out;
    for (char *dir = strtok(path, ":"); dir; dir = strtok(NULL, ":"))
        cJSON_AddItemToArray(search, cJSON_CreateString(dir));
    for (size_t i = 0; i < xa_registry_count(r); i++) {
        const xa_plugin_record *p = xa_registry_at(r, i);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(p->refused ? refused : plugins, o);
        cJSON_AddStringToObject(o, "path", p->path);
        if (p->refused) {
            cJSON_AddStringToObject(o, "reason", p->refused);
            continue;
        }
        cJSON_AddStringToObject(o, "name", p->name);
        cJSON_AddStringToObject(o, "version", p->version);
        cJSON_AddNumberToObject(o, "abi_major", p->abi_major);
        cJSON_AddNumberToObject(o, "abi_minor", p->abi_minor);
        cJSON *classes = cJSON_AddArrayToObject(o, "classes");
        for (size_t k = 0; k < ncls; k++) {
            if (cls[k].from != p)
                continue;
            cJSON *c = cJSON_CreateObject();
            cJSON_AddItemToArray(classes, c);
            cJSON_AddStringToObject(c, "name", cls[k].cls->name);
            if (cls[k].cls->description)
                cJSON_AddStringToObject(c, "description", cls[k].cls->description);
            else
                cJSON_AddNullToObject(c, "description");
            cJSON_AddItemToObject(c, "submodules", json_strings(cls[k].cls->submodules));
            cJSON_AddItemToObject(c, "options", json_strings(cls[k].cls->options));
        }
    }
out:
    free(path);
    char *s = path ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    return s;
}

int cmd_plugins(int argc, char **argv) {
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "xadapt plugins: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }

    xa_ctx *ctx = cli_ctx("plugins");
    if (!ctx)
        return 1;
    int rc = 0;
    class_entry *cls = NULL;
    xa_registry *r = xa_registry_new(ctx);
    if (!r) {
        rc = cli_fail("plugins", ctx);
        goto out_ctx;
    }
    // Files named on the command line first: a refusal is listed like any other; only running
    // out of memory stops the listing.
    for (int i = 1; i < argc; i++)
        if (argv[i][0] != '-' && xa_registry_load(r, argv[i]) == XA_ENOMEM) {
            rc = cli_fail("plugins", ctx);
            goto out_registry;
        }
    if (xa_registry_scan(r) != XA_OK) {
        rc = cli_fail("plugins", ctx);
        goto out_registry;
    }
    size_t ncls;
    if (!(cls = collect_classes(r, &ncls))) {
        fprintf(stderr, "xadapt plugins: out of memory\n");
        rc = 1;
        goto out_registry;
    }
    if (json) {
        char *s = print_json(r, cls, ncls);
        if (!s) {
            fprintf(stderr, "xadapt plugins: out of memory\n");
            rc = 1;
            goto out_registry;
        }
        puts(s);
        free(s);
    } else {
        print_text(r, cls, ncls);
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "xadapt plugins: cannot write the output\n");
        rc = 1;
    }
out_registry:
    free(cls);
    xa_registry_free(r);
out_ctx:
    xa_ctx_free(ctx);
    return rc;
}
