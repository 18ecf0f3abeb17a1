// Adapter files: one safetensors file holding every adapter parameter ("<adapter>.<param>") and,
// in __metadata__, what is needed to rebuild and trust them: plugin names and versions, the
// ABI, each adapter's options and active sub-modules, and the frozen PLM's fingerprint.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "net_internal.h"

xa_status xa_net_save(xa_net *n, const char *path) {
    xa_ctx *ctx = xa_net_ctx(n);
    xa_params *ps = xa_net_params(n);
    xa_st_writer *w = xa_st_writer_new(ctx);
    if (!w)
        return XA_ENOMEM;
    xa_status st = XA_OK;
    for (size_t i = 0; i < xa_params_count(ps) && st == XA_OK; i++)
        st = xa_st_writer_add_tensor(w, xa_params_name(ps, i), xa_params_at(ps, i));
    cJSON *list = cJSON_CreateArray();
    for (size_t i = 0; i < xa_net_adapter_count(n) && st == XA_OK; i++) {
        xa_adapter *a = xa_net_adapter_at(n, i);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", a->name);
        cJSON_AddStringToObject(e, "class", a->cls->name);
        cJSON_AddStringToObject(e, "plugin", a->plugin ? a->plugin->name : "?");
        cJSON_AddStringToObject(e, "plugin_version", a->plugin ? a->plugin->version : "?");
        cJSON_AddItemToObject(e, "options", cJSON_Parse(a->opts_json));
        cJSON *act = cJSON_AddArrayToObject(e, "active");
        for (int k = 0; k < a->nsub; k++)
            if ((a->active >> k) & 1u)
                cJSON_AddItemToArray(act, cJSON_CreateString(a->cls->submodules[k]));
        cJSON_AddBoolToObject(e, "enabled", !a->disabled);
        cJSON_AddItemToArray(list, e);
    }
    char *adapters = cJSON_PrintUnformatted(list);
    cJSON_Delete(list);
    char abi[32];
    snprintf(abi, sizeof abi, "%d.%d", XA_ABI_MAJOR, XA_ABI_MINOR);
    if (st == XA_OK && adapters) {
        xa_st_writer_meta(w, "format", "xadapt-adapters/1");
        xa_st_writer_meta(w, "xadapt_version", XA_VERSION_STRING);
        xa_st_writer_meta(w, "abi", abi);
        xa_st_writer_meta(w, "base_fingerprint", xa_model_fingerprint(xa_net_plm(n)));
        xa_st_writer_meta(w, "base_model_type", xa_net_plm(n)->cfg.model_type);
        xa_st_writer_meta(w, "adapters", adapters);
        xa_st_writer_meta(w, "fusion", xa_net_fusion(n) == XA_FUSION_CONCAT ? "concat" : "add");
        st = xa_st_writer_write(w, path);
    } else if (st == XA_OK) {
        st = xa_errorf(ctx, XA_ENOMEM, "out of memory writing %s", path);
    }
    free(adapters);
    xa_st_writer_free(w);
    return st;
}

// The network's adapter called `name`, or NULL.
static xa_adapter *adapter_named(xa_net *n, const char *name) {
    for (size_t i = 0; i < xa_net_adapter_count(n); i++)
        if (!strcmp(xa_net_adapter_name(n, i), name))
            return xa_net_adapter_at(n, i);
    return NULL;
}

// Every tensor in the file must have a place in the network, or a silently dropped tensor
// (a fusion projection, an adapter of another shape) would give wrong outputs without an error.
// Head parameters are the exception: a script may load adapters without their old head; and
// with adapters_only, the fusion's.
static xa_status check_unused(xa_ctx *ctx, xa_params *ps, const xa_st_file *f, const char *path,
                              bool adapters_only) {
    for (size_t i = 0; i < xa_st_count(f); i++) {
        const char *name = xa_st_at(f, i)->name;
        if (!strncmp(name, "head.", 5) || (adapters_only && !strncmp(name, "fusion.", 7)) ||
            xa_params_find(ps, name))
            continue;
        return xa_errorf(ctx, XA_EFORMAT,
                         "%s: tensor '%s' has no place in this network (was it saved with other "
                         "adapters or another fusion?)",
                         path, name);
    }
    return XA_OK;
}

// Whether the file names an adapter called `name` (the first `len` bytes).
static bool in_file(const cJSON *list, const char *name, size_t len) {
    for (const cJSON *e = list->child; e; e = e->next) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name");
        if (cJSON_IsString(nm) && strlen(nm->valuestring) == len &&
            !strncmp(nm->valuestring, name, len))
            return true;
    }
    return false;
}

// What a network parameter takes from the file: its value, which must be there (the file's
// adapters; the fusion the file was trained with), its value if the file has one (heads), or
// nothing (other adapters, and with adapters_only the heads and the fusion).
typedef enum { TAKE_REQUIRED, TAKE_IF_PRESENT, TAKE_NOTHING } take;

static take param_take(const char *name, const cJSON *list, bool file_concat, bool adapters_only) {
    if (!strncmp(name, "head.", 5))
        return adapters_only ? TAKE_NOTHING : TAKE_IF_PRESENT;
    if (!strncmp(name, "fusion.", 7))
        return !adapters_only && file_concat ? TAKE_REQUIRED : TAKE_NOTHING;
    const char *dot = strchr(name, '.');
    return dot && in_file(list, name, (size_t)(dot - name)) ? TAKE_REQUIRED : TAKE_NOTHING;
}

static void append_name(char *buf, size_t size, const char *name) {
    size_t at = strlen(buf);
    snprintf(buf + at, size - at, "%s%s", at ? ", " : "", name);
}

// Concat fusion projects the side networks' outputs in their order, so a file's fusion fits only
// a network with the same side networks in the same order.
static xa_status check_fusion_fits(xa_net *n, const cJSON *list, const char *path) {
    char net[1024] = "", file[1024] = "";
    for (size_t i = 0; i < xa_net_adapter_count(n); i++)
        if (xa_net_adapter_at(n, i)->ntaps > 0)
            append_name(net, sizeof net, xa_net_adapter_name(n, i));
    for (const cJSON *e = list->child; e; e = e->next) { // in the file's order
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name");
        const xa_adapter *a = cJSON_IsString(nm) ? adapter_named(n, nm->valuestring) : NULL;
        if (a && a->ntaps > 0)
            append_name(file, sizeof file, a->name);
    }
    if (!strcmp(net, file))
        return XA_OK;
    return xa_errorf(xa_net_ctx(n), XA_EINVAL,
                     "%s: its concat fusion was trained on the side networks (%s), this network "
                     "has (%s); load it with adapters_only = true and train the fusion anew",
                     path, file, net);
}

// Every value is read and checked before the first is copied, so a bad file changes nothing.
static xa_status load_values(xa_ctx *ctx, xa_params *ps, xa_st_file *f, const char *path,
                             const cJSON *list, bool file_concat, bool adapters_only) {
    size_t count = xa_params_count(ps);
    xa_tensor **src = calloc(count ? count : 1, sizeof *src);
    if (!src)
        return xa_errorf(ctx, XA_ENOMEM, "out of memory");
    xa_status st = XA_OK;
    for (size_t i = 0; i < count && st == XA_OK; i++) {
        const char *name = xa_params_name(ps, i);
        xa_tensor *dst = xa_params_at(ps, i);
        take t = param_take(name, list, file_concat, adapters_only);
        if (t == TAKE_NOTHING)
            continue;
        if (!xa_st_find(f, name)) { // a head added after these adapters keeps its init
            if (t == TAKE_REQUIRED)
                st = xa_errorf(ctx, XA_EFORMAT, "%s: no tensor '%s' for this network", path, name);
            continue;
        }
        st = xa_st_tensor(ctx, f, name, &src[i]);
        if (st == XA_OK && !xa_shape_equal(src[i], dst)) {
            char a[96], b[96];
            st = xa_errorf(ctx, XA_ESHAPE, "%s: tensor '%s' has shape %s, the network expects %s",
                           path, name, xa_shape_str(src[i], a, sizeof a),
                           xa_shape_str(dst, b, sizeof b));
        }
    }
    for (size_t i = 0; i < count; i++) {
        if (src[i] && st == XA_OK)
            memcpy(xa_params_at(ps, i)->data, src[i]->data, (size_t)src[i]->numel * sizeof(float));
        xa_tensor_release(src[i]);
    }
    free(src);
    return st;
}

// An adapter the network has already must be the file's: the same options, or its values would
// fit the shapes and still mean another network (other taps, heads, placement).
static xa_status check_same_options(xa_net *n, const xa_adapter *a, const cJSON *file_opts,
                                    const char *path) {
    cJSON *ours = cJSON_Parse(a->opts_json ? a->opts_json : "{}");
    bool same = ours && cJSON_Compare(ours, file_opts, true);
    cJSON_Delete(ours);
    if (same)
        return XA_OK;
    char *theirs = cJSON_PrintUnformatted(file_opts);
    xa_status st =
        xa_errorf(xa_net_ctx(n), XA_EINVAL,
                  "%s: adapter '%s' was saved with options %s, this network's has %s "
                  "(insert it with the file's options, or let the load insert it)",
                  path, a->name, theirs ? theirs : "?", a->opts_json ? a->opts_json : "{}");
    free(theirs);
    return st;
}

xa_status xa_net_load(xa_net *n, const char *path, bool force) {
    return xa_net_load_with(n, path, &(xa_load_opts){.force = force});
}

// Whether the instance was built without sub-module `sub`. Files written before instances
// could say so list every sub-module of the class as active (an X-adapter with experts =
// {"t"} saved "v, t"): such a name is passed over, not refused.
static bool left_out(const xa_adapter *a, const char *sub) {
    for (int i = 0; a && a->cls->submodules && i < a->nsub; i++)
        if (!strcmp(a->cls->submodules[i], sub))
            return !((a->built >> i) & 1u);
    return false;
}

xa_status xa_net_load_with(xa_net *n, const char *path, const xa_load_opts *lo) {
    xa_ctx *ctx = xa_net_ctx(n);
    bool force = lo && lo->force, adapters_only = lo && lo->adapters_only;
    xa_st_file *f;
    xa_status st = xa_st_open(ctx, path, &f);
    if (st)
        return st;
    const char *fmt = xa_st_meta_get(f, "format"), *fp = xa_st_meta_get(f, "base_fingerprint");
    const char *adapters = xa_st_meta_get(f, "adapters");
    cJSON *list = adapters ? cJSON_Parse(adapters) : NULL;
    if (!fmt || strcmp(fmt, "xadapt-adapters/1") || !cJSON_IsArray(list)) {
        st = xa_errorf(ctx, XA_EFORMAT, "%s: not an xadapt adapter file (format '%s')", path,
                       fmt ? fmt : "none");
        goto out;
    }
    if (xa_net_merged(n)) {
        st = xa_errorf(ctx, XA_ESTATE,
                       "%s: adapter '%s' computes frozen projections itself (a merged LoRA: "
                       "m:control('%s', 'unmerge') first); values cannot be loaded under it",
                       path, xa_net_merged(n), xa_net_merged(n));
        goto out;
    }
    const char *ours = xa_model_fingerprint(xa_net_plm(n));
    if (!force && (!fp || strcmp(fp, ours))) {
        st = xa_errorf(ctx, XA_EINVAL,
                       "%s: trained on a base with fingerprint %s, this PLM (%s) has %s; "
                       "refusing (force = true loads anyway)",
                       path, fp ? fp : "unknown", xa_net_plm(n)->dir, ours);
        goto out;
    }
    xa_net_mark mark;
    if ((st = xa_net_mark_take(n, &mark)) != XA_OK)
        goto out;
    char elsewhere[1024] = ""; // a class the file's plugin made, found in another plugin
    for (const cJSON *e = list->child; e && st == XA_OK; e = e->next) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
        const cJSON *cls = cJSON_GetObjectItemCaseSensitive(e, "class");
        const cJSON *opts = cJSON_GetObjectItemCaseSensitive(e, "options");
        const cJSON *act = cJSON_GetObjectItemCaseSensitive(e, "active");
        const cJSON *en = cJSON_GetObjectItemCaseSensitive(e, "enabled");
        if (!cJSON_IsString(name) || !cJSON_IsString(cls) || !cJSON_IsObject(opts)) {
            st = xa_errorf(ctx, XA_EFORMAT, "%s: malformed adapter entry in __metadata__", path);
            break;
        }
        xa_adapter *have = adapter_named(n, name->valuestring);
        if (have && strcmp(have->cls->name, cls->valuestring)) {
            st = xa_errorf(ctx, XA_EINVAL,
                           "%s: adapter '%s' is a %s in the file but a %s in this network", path,
                           name->valuestring, cls->valuestring, have->cls->name);
            break;
        }
        if (have && (st = check_same_options(n, have, opts, path)) != XA_OK)
            break;
        const cJSON *plugin = cJSON_GetObjectItemCaseSensitive(e, "plugin");
        const char *from = cJSON_IsString(plugin) ? plugin->valuestring : "?";
        if (!have) {
            char *o = cJSON_PrintUnformatted(opts);
            st = xa_net_insert(n, cls->valuestring, name->valuestring, o);
            free(o);
            if (st) {
                xa_error_wrap(ctx, "%s: adapter '%s' (class '%s' of plugin '%s')", path,
                              name->valuestring, cls->valuestring, from);
                break;
            }
        }
        const xa_plugin_record *rec = NULL;
        xa_registry *reg = xa_net_registry(n);
        if (!elsewhere[0] && strcmp(from, "?") && reg &&
            xa_registry_find(reg, cls->valuestring, &rec) && rec && rec->name &&
            strcmp(rec->name, from))
            snprintf(elsewhere, sizeof elsewhere,
                     "adapter '%s' was saved from plugin '%s'; class '%s' here is plugin '%s' (%s)",
                     name->valuestring, from, cls->valuestring, rec->name, rec->path);
        xa_adapter *a = adapter_named(n, name->valuestring); // inserted above if it was not there
        const char *names[32];
        int k = 0;
        for (const cJSON *s = cJSON_IsArray(act) ? act->child : NULL; s && k < 32; s = s->next)
            if (cJSON_IsString(s) && !left_out(a, s->valuestring))
                names[k++] = s->valuestring;
        // classes without sub-modules are switched as a whole through "enabled"
        bool has_sub = cJSON_GetArraySize(act) > 0 || (a && a->nsub > 0);
        if (has_sub)
            st = xa_net_activate(n, name->valuestring, names, k);
        else
            st = xa_net_activate(n, name->valuestring, NULL, cJSON_IsFalse(en) ? 0 : -1);
    }
    const char *fusion = xa_st_meta_get(f, "fusion");
    bool file_concat = fusion && !strcmp(fusion, "concat");
    if (st == XA_OK && fusion && !adapters_only) { // the file says how its side networks were fused
        xa_net_set_fusion(n, file_concat ? XA_FUSION_CONCAT : XA_FUSION_ADD);
        if (file_concat)
            st = check_fusion_fits(n, list, path);
    }
    if (st == XA_OK && !adapters_only) // the fusion's parameters, to take the file's values
        st = xa_net_prepare(n);
    if (st == XA_OK)
        st = check_unused(ctx, xa_net_params(n), f, path, adapters_only);
    if (st == XA_OK)
        st = load_values(ctx, xa_net_params(n), f, path, list, file_concat, adapters_only);
    if (st == XA_OK) {
        xa_net_mark_free(&mark);
    } else {
        xa_net_mark_restore(n, &mark);
        if (elsewhere[0])
            xa_error_wrap(ctx, "%s", elsewhere);
    }
out:
    cJSON_Delete(list);
    xa_st_close(f);
    return st;
}
