/* settings.c: every setting of the engine in one table, resolved in one place as
 * defaults < config file < environment < overrides (the CLI). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "internal.h"

#define DEFAULT_CONFIG_PATH "/etc/oss-connector/config.json" /* ossc_default_config_path */

enum setting_type { T_STR, T_INT, T_SIZE, T_ENUM };

typedef struct setting_def {
    const char *key;       /* config.json name; a dot means a nested object */
    const char *env;       /* OSSC_ name */
    const char *oss_env;   /* the contract's name, if any */
    const char *s3_env;    /* the AWS name accepted for s3:// when oss_env is unset */
    enum setting_type type;
    size_t offset;
    size_t cap;            /* strings: buffer size; ints: unused */
    long long min, max;
    const char *choices;   /* enums: "|"-separated, the index is the stored value */
    const char *numbered;  /* enums: the names a number stands for ("|"-separated, from 0) */
    const char *def;
    /* For the commands' options (ossc-run --help), generated from this table: */
    const char *group;     /* "store", "tuning", "session" or "logging" */
    const char *help;      /* what it does, without range, default or variable (added) */
    bool cli_switch;       /* an option without value that sets "yes" (a no|yes enum) */
} setting_def;

/* The last arguments, all optional, set .group, .help and .cli_switch by name. */
#define STR(k, e, oe, se, field, d, ...) \
    {.key = k, .env = e, .oss_env = oe, .s3_env = se, .type = T_STR, \
     .offset = offsetof(settings, field), .cap = sizeof(((settings *)0)->field), .def = d, \
     __VA_ARGS__}
#define INT(k, e, oe, field, lo, hi, d, ...) \
    {.key = k, .env = e, .oss_env = oe, .type = T_INT, .offset = offsetof(settings, field), \
     .min = lo, .max = hi, .def = d, __VA_ARGS__}
#define SIZE(k, e, field, lo, hi, d, ...) \
    {.key = k, .env = e, .type = T_SIZE, .offset = offsetof(settings, field), .min = lo, \
     .max = hi, .def = d, __VA_ARGS__}
#define ENUM(k, e, oe, field, ch, d, ...) \
    {.key = k, .env = e, .oss_env = oe, .type = T_ENUM, .offset = offsetof(settings, field), \
     .choices = ch, .def = d, __VA_ARGS__}

/* logLevel as a number, as Aliyun's OSS connector numbers it in the config.json its package
 * installs ("logLevel": 1): 0 DEBUG, 1 INFO, 2 WARN, 3 ERROR (the configuration table in
 * github.com/aliyun/oss-connector-for-ai-ml, docs/torchconnector/configuration.md). "off"
 * has no number there, and none here. */
#define ALIYUN_LOG_LEVELS "debug|info|warn|error"

static const setting_def defs[] = {
    STR("endpoint", "OSSC_ENDPOINT", "OSS_ENDPOINT", "AWS_ENDPOINT_URL", endpoint, "",
        .group = "store", .help = "the store's URL, e.g. http://oss-cn-hangzhou-internal."
        "aliyuncs.com (scheme defaults to http)"),
    STR("region", "OSSC_REGION", "OSS_REGION", "AWS_REGION", region, "", .group = "store",
        .help = "region for V4 signing (default: from the endpoint; us-east-1 for s3://)"),
    ENUM("signature", "OSSC_SIGNATURE", NULL, signature, "v4|v1", "v4", .group = "store",
         .help = "OSS signature version (s3:// always uses AWS SigV4)"),
    ENUM("addressing", "OSSC_ADDRESSING", NULL, path_style, "auto|virtual|path", "auto",
         .group = "store", .help = "bucket in the host name or in the path (auto: path for "
         "custom S3 endpoints, else virtual)"),
    STR("credentialsFile", "OSSC_CREDENTIALS_FILE", NULL, NULL, credentials_file, "",
        .group = "store", .help = "JSON file with AccessKeyId, AccessKeySecret, SecurityToken, "
        "Expiration"),
    INT("prefetch.vcpus", "OSSC_PREFETCH_VCPUS", NULL, vcpus, 1, 64, "auto", .group = "tuning",
        .help = "fetch threads (auto: the CPUs this process may use, 2 to 64)"),
    INT("prefetch.workers", "OSSC_PREFETCH_WORKERS", NULL, workers, 1, 256, "auto",
        .group = "tuning", .help = "transfers in flight per thread (auto: 8)"),
    SIZE("chunkSize", "OSSC_CHUNK_SIZE", chunk_size, 64 << 10, 1LL << 30, "auto",
         .group = "tuning", .help = "bytes per ranged GET, e.g. 32MiB (auto: each fetch's bytes "
         "over twice the transfers in flight, 4MiB to 32MiB)"),
    INT("retries", "OSSC_RETRIES", NULL, retries, 0, 100, "8", .group = "tuning",
        .help = "retries per request after the first attempt"),
    INT("connectTimeoutSec", "OSSC_CONNECT_TIMEOUT_SEC", NULL, connect_timeout_sec, 1, 3600, "10",
        .group = "tuning", .help = "TCP/TLS connect timeout, seconds"),
    INT("stallTimeoutSec", "OSSC_STALL_TIMEOUT_SEC", NULL, stall_timeout_sec, 1, 3600, "30",
        .group = "tuning", .help = "a transfer below 1 KiB/s for this many seconds is retried"),
    {.key = "logLevel", .env = "OSSC_LOG_LEVEL", .type = T_ENUM,
     .offset = offsetof(settings, log_level), .choices = "error|warn|info|debug|off",
     .numbered = ALIYUN_LOG_LEVELS, .def = "info", .group = "logging",
     .help = "engine and shim log level (config.json may give Aliyun's numbers)"},
    STR("logPath", "OSSC_LOG_PATH", NULL, NULL, log_path, "", .group = "logging",
        .help = "log file (default: stderr)"),
    STR("auditPath", "OSSC_AUDIT_PATH", NULL, NULL, audit_path, "", .group = "logging",
        .help = "a line per model file a process read: pid, path, bytes, time waited"),
    INT("expireTimeSec", "OSSC_EXPIRE_TIME_SEC", NULL, expire_time_sec, 0, 1 << 30, "120",
        .group = "session", .help = "release the data files this many seconds after the last "
        "open of a complete session (0: never)"),
    SIZE("smallFileSize", "OSSC_SMALL_FILE_SIZE", small_file_size, 0, 1LL << 30, "4MiB",
         .group = "session", .help = "objects below this size are fetched whole into "
         "MODEL_DIR before COMMAND starts"),
    INT("readTimeoutSec", "OSSC_READ_TIMEOUT_SEC", NULL, read_timeout_sec, 1, 86400, "600",
        .group = "session", .help = "a read waiting longer than this many seconds fails with "
        "EIO"),
    ENUM("allowNonEmptyModelDir", "OSSC_ALLOW_NON_EMPTY_MODEL_DIR", NULL, allow_non_empty,
         "no|yes", "no", .group = "session", .cli_switch = true,
         .help = "fill a non-empty MODEL_DIR that ossc did not create"),
    STR("cacheDir", "OSSC_CACHE_DIR", NULL, NULL, cache_dir, "", .group = "session",
        .help = "where the data files go (default: the session in /dev/shm), e.g. a local "
        "NVMe directory"),
    ENUM("prefetch.policy", "OSSC_PREFETCH_POLICY", NULL, fetch_policy, "eager|lazy", "eager",
         .group = "session", .help = "eager: fetch every large file at start, in order; lazy: "
         "fetch a large file when a process first opens it (many adapters or checkpoints)"),
    STR("cacheLimit", "OSSC_CACHE_LIMIT", NULL, NULL, cache_limit, "", .group = "session",
        .help = "most bytes the data files may hold, e.g. 8GiB or 50% (of the cache's "
        "filesystem); past it the least recently opened files nobody holds are released "
        "(default: no limit)"),
    STR("sharedGroup", "OSSC_SHARED_GROUP", NULL, NULL, shared_group, "", .group = "session",
        .help = "a group (name or gid) whose members may attach to the session read-only "
        "(default: private to this user)"),
    ENUM("verifyBeforeRead", "OSSC_VERIFY_BEFORE_READ", NULL, verify_before_read, "no|yes",
         "yes", .group = "session", .help = "readers see an object the store sends a CRC-64 "
         "for only once it verified"),
    /* Read by the shim from its environment (ossc-run exports it): docs/SEMANTICS.md. */
    ENUM("pinGpu", "OSSC_PIN_GPU", NULL, pin_gpu, "no|yes", "no", .group = "session",
         .cli_switch = true, .help = "register shared mappings of model files with CUDA in "
         "processes that have a CUDA context already, so copies from them to the GPU run at "
         "pinned speed (private mappings, safetensors' among them, are left alone)"),
    SIZE("upload.partSize", "OSSC_UPLOAD_PART_SIZE", upload_part_size, 5 << 20, 1LL << 30,
         "16MiB", .group = "tuning", .help = "bytes per part of a multipart upload (objects "
         "below it go in one PUT)"),
    INT("upload.concurrency", "OSSC_UPLOAD_CONCURRENCY", NULL, upload_concurrency, 1, 64, "8",
        .group = "tuning", .help = "parts a client sends at once, over all its uploads"),
    ENUM("upload.checksum", "OSSC_UPLOAD_CHECKSUM", NULL, upload_checksum,
         "auto|md5|crc32c|crc64|off", "auto", .group = "tuning", .help = "how uploads are "
         "verified: md5 (Content-MD5: the store refuses other bytes; ETags checked), crc32c "
         "(s3:// only: x-amz-checksum-crc32c, refused likewise), crc64 (the CRC-64 OSS "
         "returns, checked per part and object), off; auto: crc64 for oss://, crc32c for "
         "s3://"),
};
#define N_DEFS (sizeof(defs) / sizeof(defs[0]))

/* Objects of Aliyun's config.json that its torch connector reads: accepted as they are and not
 * interpreted here; ossc-run keeps them when it writes the file. */
static const char *const kept_objects[] = {"datasetConfig", "checkpointConfig"};
#define N_KEPT (sizeof(kept_objects) / sizeof(kept_objects[0]))

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[64];
    if (lb >= 64)
        return 99;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t cost = (a[i - 1] | 32) == (b[j - 1] | 32) ? 0 : 1;
            size_t best = diag + cost;
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

static const setting_def *find_def(const char *key)
{
    for (size_t i = 0; i < N_DEFS; i++)
        if (strcmp(defs[i].key, key) == 0)
            return &defs[i];
    return NULL;
}

static bool is_kept_object(const char *key)
{
    for (size_t i = 0; i < N_KEPT; i++)
        if (strcmp(kept_objects[i], key) == 0)
            return true;
    return false;
}

/* True if some setting lives inside the object named group ("prefetch"). */
static bool is_group(const char *group)
{
    size_t n = strlen(group);
    for (size_t i = 0; i < N_DEFS; i++)
        if (strncmp(defs[i].key, group, n) == 0 && defs[i].key[n] == '.')
            return true;
    return false;
}

static void consider(const char *key, const char *candidate, size_t len, const char **best,
                     size_t *best_len, size_t *best_d)
{
    char name[64];
    snprintf(name, sizeof(name), "%.*s", (int)len, candidate);
    size_t d = edit_distance(key, name);
    if (d < *best_d) {
        *best_d = d;
        *best = candidate;
        *best_len = len;
    }
}

/* The error for a key no setting has, with the nearest known name (a setting, the object that
 * groups settings, or a kept object) as a hint. */
static void unknown_key(ossc_error *err, const char *where, const char *key)
{
    const char *best = NULL;
    size_t best_len = 0, best_d = 4;
    for (size_t i = 0; i < N_DEFS; i++) {
        consider(key, defs[i].key, strlen(defs[i].key), &best, &best_len, &best_d);
        const char *dot = strchr(defs[i].key, '.');
        if (dot)
            consider(key, defs[i].key, (size_t)(dot - defs[i].key), &best, &best_len, &best_d);
    }
    for (size_t i = 0; i < N_KEPT; i++)
        consider(key, kept_objects[i], strlen(kept_objects[i]), &best, &best_len, &best_d);
    if (best)
        err_set(err, OSSC_E_CONFIG, "%s: unknown setting '%s' (did you mean '%.*s'?)", where,
                key, (int)best_len, best);
    else
        err_set(err, OSSC_E_CONFIG, "%s: unknown setting '%s'", where, key);
}

/* The n-th name of a "|"-separated list into out; false if there is none. */
static bool nth_choice(const char *choices, long long n, char *out, size_t cap)
{
    const char *c = choices;
    for (long long k = 0; k < n && *c; k++)
        c += strcspn(c, "|") + (c[strcspn(c, "|")] == '|');
    if (n < 0 || !*c)
        return false;
    snprintf(out, cap, "%.*s", (int)strcspn(c, "|"), c);
    return true;
}

/* "8MiB", "512k", "1048576" -> bytes. */
static bool parse_size(const char *text, long long *out)
{
    errno = 0;
    char *end;
    long long v = strtoll(text, &end, 10);
    if (end == text || errno || v < 0)
        return false;
    while (*end == ' ')
        end++;
    static const struct { const char *suffix; int shift; } units[] = {
        {"", 0}, {"b", 0}, {"k", 10}, {"kb", 10}, {"kib", 10}, {"m", 20}, {"mb", 20},
        {"mib", 20}, {"g", 30}, {"gb", 30}, {"gib", 30},
    };
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcasecmp(end, units[i].suffix) == 0) {
            if (v > (LLONG_MAX >> units[i].shift))
                return false;
            *out = v << units[i].shift;
            return true;
        }
    }
    return false;
}

bool settings_cache_limit(const char *text, uint64_t *bytes, int *percent)
{
    *bytes = 0;
    *percent = 0;
    if (!*text)
        return true;
    size_t n = strlen(text);
    if (text[n - 1] == '%') {
        char *end;
        errno = 0;
        long v = strtol(text, &end, 10);
        if (end != text + n - 1 || errno || v < 1 || v > 100)
            return false;
        *percent = (int)v;
        return true;
    }
    long long v;
    if (!parse_size(text, &v) || v < 1)
        return false;
    *bytes = (uint64_t)v;
    return true;
}

/* The derived bit of a setting that may be "auto"; 0 for the others. */
static unsigned derived_bit(const setting_def *d)
{
    if (d->offset == offsetof(settings, vcpus))
        return DERIVED_VCPUS;
    if (d->offset == offsetof(settings, workers))
        return DERIVED_WORKERS;
    if (d->offset == offsetof(settings, chunk_size))
        return DERIVED_CHUNK_SIZE;
    return 0;
}

/* "auto": the value tuning.c derives from this machine. chunkSize's is a placeholder that
 * each fetch replaces with one sized to its bytes; workers' follows the final prefetch.vcpus,
 * at the end of settings_resolve. */
static void set_derived(settings *s, const setting_def *d)
{
    tuning t;
    tuning_probe(&t);
    char *field = (char *)s + d->offset;
    if (d->offset == offsetof(settings, vcpus))
        *(int *)field = tuning_threads(&t);
    else if (d->offset == offsetof(settings, chunk_size))
        *(uint64_t *)field = tuning_chunk_size(&t, UINT64_MAX / 2, 1);
    s->derived |= derived_bit(d);
}

static int set_value(settings *s, const setting_def *d, const char *text, const char *where,
                     ossc_error *err)
{
    char *field = (char *)s + d->offset;
    long long v;
    char *end;
    bool derivable = d->type != T_ENUM && d->def && strcmp(d->def, "auto") == 0;
    s->derived &= ~derived_bit(d); /* until "auto" says otherwise, below */
    if (derivable && strcasecmp(text, "auto") == 0) {
        set_derived(s, d);
        return 0;
    }
    switch (d->type) {
    case T_STR:
        if (strlen(text) >= d->cap) {
            err_set(err, OSSC_E_CONFIG, "%s: value of '%s' is too long (max %zu)", where, d->key,
                    d->cap - 1);
            return OSSC_E_CONFIG;
        }
        strcpy(field, text);
        return 0;
    case T_INT:
        errno = 0;
        v = strtoll(text, &end, 10);
        if (end == text || *end || errno || v < d->min || v > d->max) {
            err_set(err, OSSC_E_CONFIG, "%s: '%s' must be an integer from %lld to %lld%s, not "
                    "'%s'", where, d->key, d->min, d->max, derivable ? " or auto" : "", text);
            return OSSC_E_CONFIG;
        }
        *(int *)field = (int)v;
        return 0;
    case T_SIZE:
        if (!parse_size(text, &v) || v < d->min || v > d->max) {
            err_set(err, OSSC_E_CONFIG, "%s: '%s' must be a size from %lld to %lld bytes "
                    "(e.g. 8MiB)%s, not '%s'", where, d->key, d->min, d->max,
                    derivable ? " or auto" : "", text);
            return OSSC_E_CONFIG;
        }
        *(uint64_t *)field = (uint64_t)v;
        return 0;
    case T_ENUM: {
        char name[32];
        errno = 0;
        v = strtoll(text, &end, 10);
        if (d->numbered && end != text && !*end && !errno) {
            if (!nth_choice(d->numbered, v, name, sizeof(name))) {
                char numbers[128] = "";
                for (int k = 0; nth_choice(d->numbered, k, name, sizeof(name)); k++)
                    snprintf(numbers + strlen(numbers), sizeof(numbers) - strlen(numbers),
                             "%s%d %s", k ? ", " : "", k, name);
                err_set(err, OSSC_E_CONFIG, "%s: '%s' must be one of %s or a number (%s), "
                        "not '%s'", where, d->key, d->choices, numbers, text);
                return OSSC_E_CONFIG;
            }
            text = name;
        }
        const char *c = d->choices;
        for (int idx = 0; *c; idx++) {
            size_t n = strcspn(c, "|");
            if (strlen(text) == n && strncasecmp(c, text, n) == 0) {
                *(int *)field = idx;
                return 0;
            }
            c += n + (c[n] == '|');
        }
        err_set(err, OSSC_E_CONFIG, "%s: '%s' must be one of %s, not '%s'", where, d->key,
                d->choices, text);
        return OSSC_E_CONFIG;
    }
    }
    return OSSC_E_CONFIG;
}

/* Applies one JSON member (nested objects flatten into dotted keys). */
static int apply_json(settings *s, const cJSON *node, const char *prefix, const char *path,
                      ossc_error *err)
{
    char key[128];
    for (const cJSON *m = node->child; m; m = m->next) {
        snprintf(key, sizeof(key), "%s%s", prefix, m->string);
        if (!*prefix && is_kept_object(key)) {
            if (!cJSON_IsObject(m)) {
                err_set(err, OSSC_E_CONFIG, "%s: '%s' has the wrong type (expected an object)",
                        path, key);
                return OSSC_E_CONFIG;
            }
            continue; /* the torch connector's: not ours to read */
        }
        if (cJSON_IsObject(m)) {
            if (!is_group(key)) {
                unknown_key(err, path, key);
                return OSSC_E_CONFIG;
            }
            char nested[130];
            snprintf(nested, sizeof(nested), "%s.", key);
            int rc = apply_json(s, m, nested, path, err);
            if (rc)
                return rc;
            continue;
        }
        const setting_def *d = find_def(key);
        if (!d) {
            unknown_key(err, path, key);
            return OSSC_E_CONFIG;
        }
        char text[1100];
        if (cJSON_IsString(m)) {
            snprintf(text, sizeof(text), "%s", m->valuestring);
        } else if (cJSON_IsNumber(m) && (d->type == T_INT || d->type == T_SIZE || d->numbered)) {
            if (m->valuedouble != (double)(long long)m->valuedouble) {
                err_set(err, OSSC_E_CONFIG, "%s: '%s' must be a whole number", path, key);
                return OSSC_E_CONFIG;
            }
            snprintf(text, sizeof(text), "%lld", (long long)m->valuedouble);
        } else {
            err_set(err, OSSC_E_CONFIG, "%s: '%s' has the wrong type (expected %s)", path, key,
                    d->numbered ? "a string or a number"
                    : d->type == T_STR || d->type == T_ENUM ? "a string" : "a number");
            return OSSC_E_CONFIG;
        }
        int rc = set_value(s, d, text, path, err);
        if (rc)
            return rc;
    }
    return 0;
}

static int read_config_file(settings *s, const char *path, bool must_exist, ossc_error *err)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        if (!must_exist && errno == ENOENT)
            return 0;
        err_set(err, OSSC_E_CONFIG, "cannot read config file %s: %s", path, strerror(errno));
        return OSSC_E_CONFIG;
    }
    char buf[65536];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    bool too_big = !feof(f);
    fclose(f);
    if (too_big) {
        err_set(err, OSSC_E_CONFIG, "config file %s is larger than 64 KiB", path);
        return OSSC_E_CONFIG;
    }
    buf[n] = '\0';
    cJSON *root = cJSON_ParseWithLength(buf, n);
    if (!root || !cJSON_IsObject(root)) {
        err_set(err, OSSC_E_CONFIG, "config file %s is not a JSON object", path);
        cJSON_Delete(root);
        return OSSC_E_CONFIG;
    }
    int rc = apply_json(s, root, "", path, err);
    cJSON_Delete(root);
    if (rc == 0)
        snprintf(s->config_path, sizeof(s->config_path), "%s", path);
    return rc;
}

static const char *override_value(const char *const *ov, size_t n, const char *key)
{
    size_t kl = strlen(key);
    for (size_t i = n; i-- > 0;)
        if (strncmp(ov[i], key, kl) == 0 && ov[i][kl] == '=')
            return ov[i] + kl + 1;
    return NULL;
}

static bool is_custom_s3_endpoint(const char *url)
{
    return !strstr(url, "amazonaws.com") && !strstr(url, "aliyuncs.com");
}

/* A variable from envp ("NAME=value" items, NULL-terminated), or from the process
 * environment when envp is NULL. */
static const char *env_get(const char *const *envp, const char *name)
{
    if (!envp)
        return getenv(name);
    size_t len = strlen(name);
    for (; *envp; envp++)
        if (strncmp(*envp, name, len) == 0 && (*envp)[len] == '=')
            return *envp + len + 1;
    return NULL;
}

int settings_resolve(settings *s, int scheme, const char *const *overrides, size_t n,
                     const char *const *envp, ossc_error *err)
{
    memset(s, 0, sizeof(*s));
    int rc = 0;
    for (size_t i = 0; i < N_DEFS; i++)
        if ((rc = set_value(s, &defs[i], defs[i].def, "default", err)))
            return rc;

    /* Every override must name a setting (or the config file itself). */
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(overrides[i], '=');
        char key[128];
        size_t kl = eq ? (size_t)(eq - overrides[i]) : strlen(overrides[i]);
        snprintf(key, sizeof(key), "%.*s", (int)(kl < 127 ? kl : 127), overrides[i]);
        if (!eq) {
            err_set(err, OSSC_E_CONFIG, "option '%s' has no value (expected key=value)", key);
            return OSSC_E_CONFIG;
        }
        if (strcmp(key, "config") != 0 && !find_def(key)) {
            unknown_key(err, "option", key);
            return OSSC_E_CONFIG;
        }
    }

    const char *cfg = override_value(overrides, n, "config");
    if (!cfg)
        cfg = env_get(envp, "OSSC_CONFIG");
    /* An explicitly empty path means no config file at all. */
    if (!cfg)
        rc = read_config_file(s, DEFAULT_CONFIG_PATH, false, err);
    else if (*cfg)
        rc = read_config_file(s, cfg, true, err);
    if (rc)
        return rc;

    for (size_t i = 0; i < N_DEFS; i++) {
        const setting_def *d = &defs[i];
        const char *v = NULL, *src = NULL;
        if ((v = override_value(overrides, n, d->key))) {
            src = "option";
        } else if (d->env && (v = env_get(envp, d->env))) {
            src = d->env;
        } else if (d->oss_env && (v = env_get(envp, d->oss_env))) {
            src = d->oss_env;
        } else if (scheme == SCHEME_S3 && d->s3_env && (v = env_get(envp, d->s3_env))) {
            src = d->s3_env;
        }
        if (v && (rc = set_value(s, d, v, src, err)))
            return rc;
    }

    if (s->derived & DERIVED_WORKERS) /* prefetch.vcpus is final now */
        s->workers = tuning_transfers(s->vcpus);

    if (scheme == SCHEME_S3) {
        if (s->signature == SIG_OSS_V1) {
            err_set(err, OSSC_E_CONFIG, "signature v1 applies to oss:// only; s3:// always uses "
                    "AWS SigV4");
            return OSSC_E_CONFIG;
        }
        s->signature = SIG_AWS_V4;
        const char *region = env_get(envp, "AWS_DEFAULT_REGION");
        if (!*s->region)
            snprintf(s->region, sizeof(s->region), "%s", region ? region : "us-east-1");
    }
    uint64_t bytes;
    int percent;
    if (!settings_cache_limit(s->cache_limit, &bytes, &percent)) {
        err_set(err, OSSC_E_CONFIG, "'cacheLimit' must be a size (e.g. 8GiB) or a percentage "
                "of the cache's filesystem from 1%% to 100%% (e.g. 50%%), not '%s'",
                s->cache_limit);
        return OSSC_E_CONFIG;
    }
    /* addressing: 0 auto, 1 virtual, 2 path -> path_style flag */
    int addressing = s->path_style;
    if (addressing == 0)
        s->path_style = scheme == SCHEME_S3 && is_custom_s3_endpoint(s->endpoint);
    else
        s->path_style = addressing == 2;
    return 0;
}

/* root printed, as a malloc'd string, and freed. */
static char *json_take(cJSON *root)
{
    char *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!out)
        return NULL;
    char *copy = strdup(out); /* cJSON's allocator may not be ours: hand back a malloc'd copy */
    cJSON_free(out);
    return copy;
}

char *settings_to_json(const settings *s, bool keep_auto)
{
    cJSON *root = cJSON_CreateObject();
    for (size_t i = 0; i < N_DEFS; i++) {
        const setting_def *d = &defs[i];
        const char *field = (const char *)s + d->offset;
        char *dot = strchr(d->key, '.');
        cJSON *parent = root;
        const char *name = d->key;
        if (dot) {
            char group[64];
            snprintf(group, sizeof(group), "%.*s", (int)(dot - d->key), d->key);
            parent = cJSON_GetObjectItemCaseSensitive(root, group);
            if (!parent)
                parent = cJSON_AddObjectToObject(root, group);
            name = dot + 1;
        }
        if (keep_auto && (s->derived & derived_bit(d))) {
            cJSON_AddStringToObject(parent, name, "auto");
            continue;
        }
        switch (d->type) {
        case T_STR:
            cJSON_AddStringToObject(parent, name, field);
            break;
        case T_INT:
            cJSON_AddNumberToObject(parent, name, *(const int *)field);
            break;
        case T_SIZE:
            cJSON_AddNumberToObject(parent, name, (double)*(const uint64_t *)field);
            break;
        case T_ENUM: {
            int idx = *(const int *)field;
            const char *c = d->choices;
            if (d->offset == offsetof(settings, path_style)) {
                cJSON_AddStringToObject(parent, name, idx ? "path" : "virtual");
                break;
            }
            if (d->offset == offsetof(settings, signature) && idx == SIG_AWS_V4) {
                cJSON_AddStringToObject(parent, name, "v4"); /* SigV4: v4 in a config file */
                break;
            }
            char v[32];
            if (!nth_choice(c, idx, v, sizeof(v)))
                v[0] = '\0';
            cJSON_AddStringToObject(parent, name, v);
            break;
        }
        }
    }
    return json_take(root);
}

OSSC_API const char *ossc_default_config_path(void) { return DEFAULT_CONFIG_PATH; }

/* A "|"-separated list as a JSON array of its names. */
static void add_names(cJSON *obj, const char *name, const char *list)
{
    cJSON *array = cJSON_AddArrayToObject(obj, name);
    char one[32];
    for (int k = 0; nth_choice(list, k, one, sizeof(one)); k++)
        cJSON_AddItemToArray(array, cJSON_CreateString(one));
}

OSSC_API char *ossc_settings_describe(void)
{
    static const char *const type_names[] = {[T_STR] = "string", [T_INT] = "int",
                                             [T_SIZE] = "size", [T_ENUM] = "enum"};
    cJSON *root = cJSON_CreateArray();
    for (size_t i = 0; i < N_DEFS; i++) {
        const setting_def *d = &defs[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(root, o);
        cJSON_AddStringToObject(o, "key", d->key);
        cJSON_AddStringToObject(o, "env", d->env);
        if (d->oss_env)
            cJSON_AddStringToObject(o, "ossEnv", d->oss_env);
        if (d->s3_env)
            cJSON_AddStringToObject(o, "s3Env", d->s3_env);
        cJSON_AddStringToObject(o, "type", type_names[d->type]);
        cJSON_AddStringToObject(o, "default", d->def);
        if (d->type == T_INT || d->type == T_SIZE) {
            cJSON_AddNumberToObject(o, "min", (double)d->min);
            cJSON_AddNumberToObject(o, "max", (double)d->max);
        }
        if (d->type == T_STR)
            cJSON_AddNumberToObject(o, "maxLength", (double)(d->cap - 1));
        if (d->choices)
            add_names(o, "choices", d->choices);
        if (d->numbered)
            add_names(o, "numbered", d->numbered);
        if (d->group)
            cJSON_AddStringToObject(o, "group", d->group);
        if (d->help)
            cJSON_AddStringToObject(o, "help", d->help);
        cJSON_AddBoolToObject(o, "switch", d->cli_switch);
    }
    return json_take(root);
}
