/* client.c: a client bound to one store URL: settings, endpoint, credentials; and the
 * metadata calls (list, head) that run synchronously on the caller's thread. */
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define LIST_PAGE_KEYS "1000"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_global(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

OSSC_API ossc_client *ossc_client_new(const char *url, const char *const *overrides,
                                      size_t n_overrides, ossc_error *err)
{
    err_clear(err);
    pthread_once(&curl_once, curl_global);
    ossc_client *c = calloc(1, sizeof(*c));
    if (!c) {
        err_set(err, OSSC_E_NOMEM, "out of memory");
        return NULL;
    }
    strcpy(c->product, "oss");
    pthread_mutex_init(&c->upload_lock, NULL);
    pthread_cond_init(&c->upload_slot_free, NULL);
    pthread_mutex_init(&c->pool_lock, NULL);
    c->pool_pid = getpid();
    if (url_parse_store(url, &c->url, err) ||
        settings_resolve(&c->s, c->url.scheme, overrides, n_overrides, NULL, err))
        goto fail;
    log_configure(c->s.log_level, c->s.log_path);
    if (!*c->s.endpoint) {
        err_set(err, OSSC_E_CONFIG, "no endpoint: set OSS_ENDPOINT%s (e.g. "
                "http://oss-cn-hangzhou-internal.aliyuncs.com) or --endpoint",
                c->url.scheme == SCHEME_S3 ? " or AWS_ENDPOINT_URL" : "");
        goto fail;
    }
    if (url_parse_endpoint(c->s.endpoint, &c->ep, err))
        goto fail;
    if (c->s.signature == SIG_OSS_V4 && !*c->s.region &&
        url_derive_oss_region(c->ep.host, c->s.region, sizeof(c->s.region)) != 0) {
        err_set(err, OSSC_E_CONFIG, "cannot derive the region from endpoint %s for V4 signing: "
                "set OSS_REGION (e.g. cn-hangzhou) or use OSSC_SIGNATURE=v1", c->ep.host);
        goto fail;
    }
    if (creds_init(&c->creds, c->url.scheme, c->s.credentials_file, err)) {
        creds_destroy(&c->creds);
        goto fail;
    }
    return c;
fail:
    pthread_cond_destroy(&c->upload_slot_free);
    pthread_mutex_destroy(&c->upload_lock);
    multi_pool_free(c);
    free(c->url.prefix);
    free(c);
    return NULL;
}

OSSC_API void ossc_client_free(ossc_client *c)
{
    if (!c)
        return;
    creds_destroy(&c->creds);
    pthread_cond_destroy(&c->upload_slot_free);
    pthread_mutex_destroy(&c->upload_lock);
    multi_pool_free(c);
    free(c->url.prefix);
    free(c);
}

OSSC_API int ossc_client_set_credentials(ossc_client *c, const char *access_key_id,
                                         const char *access_key_secret,
                                         const char *security_token, ossc_error *err)
{
    err_clear(err);
    return creds_set(&c->creds, access_key_id, access_key_secret, security_token, err);
}

OSSC_API char *ossc_client_settings_json(const ossc_client *c)
{
    return settings_to_json(&c->s, false);
}

OSSC_API char *ossc_settings_json(const char *url, const char *const *overrides,
                                  size_t n_overrides, const char *const *envp, ossc_error *err)
{
    err_clear(err);
    store_url parsed = {.scheme = SCHEME_OSS};
    if (url && url_parse_store(url, &parsed, err))
        return NULL;
    free(parsed.prefix);
    settings s;
    if (settings_resolve(&s, parsed.scheme, overrides, n_overrides, envp, err))
        return NULL;
    char *json = settings_to_json(&s, true);
    if (!json)
        err_set(err, OSSC_E_NOMEM, "out of memory");
    return json;
}

OSSC_API const char *ossc_client_prefix(const ossc_client *c) { return c->url.prefix; }

OSSC_API void ossc_listing_free(ossc_listing *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->count; i++)
        free((char *)l->objects[i].key);
    free(l->objects);
    free(l);
}

/* Appends a page's objects to the listing, taking ownership of their keys. */
static int take_page(ossc_listing *l, size_t *cap, list_page *page)
{
    if (page->count == 0)
        return 0; /* nothing to move; l->objects may still be NULL (memcpy's undefined case) */
    if (l->count + page->count > *cap) {
        size_t ncap = *cap ? *cap : 1024;
        while (ncap < l->count + page->count)
            ncap *= 2;
        ossc_object *o = realloc(l->objects, ncap * sizeof(*o));
        if (!o)
            return OSSC_E_NOMEM;
        l->objects = o;
        *cap = ncap;
    }
    memcpy(l->objects + l->count, page->objects, page->count * sizeof(ossc_object));
    l->count += page->count;
    page->count = 0; /* the keys moved */
    return 0;
}

/* One ListObjectsV2 page of prefix, after a continuation token or a start-after key. */
static int list_page_get(ossc_client *c, const char *prefix, const char *token,
                         const char *after, reply *rp, list_page *page, ossc_error *err)
{
    request r;
    request_init(&r, "GET", NULL);
    request_add_query(&r, "list-type", "2");
    request_add_query(&r, "prefix", prefix);
    request_add_query(&r, "max-keys", LIST_PAGE_KEYS);
    request_add_query(&r, "encoding-type", "url");
    if (token)
        request_add_query(&r, "continuation-token", token);
    if (after)
        request_add_query(&r, "start-after", after);
    char what[256];
    snprintf(what, sizeof(what), "listing %s://%s/%s", c->url.scheme == SCHEME_S3 ? "s3" : "oss",
             c->url.bucket, prefix);
    int rc = http_perform(c, &r, rp, what, err);
    request_free(&r);
    if (rc == 0)
        rc = xml_parse_list_page(rp->body.data, rp->body.len, page, err);
    return rc;
}

OSSC_API int ossc_list(ossc_client *c, const char *prefix, ossc_listing **out, ossc_error *err)
{
    err_clear(err);
    *out = NULL;
    ossc_listing *l = calloc(1, sizeof(*l));
    if (!l) {
        err_set(err, OSSC_E_NOMEM, "out of memory");
        return OSSC_E_NOMEM;
    }
    const char *pfx = prefix ? prefix : c->url.prefix;
    size_t cap = 0;
    char *token = NULL;
    reply rp;
    memset(&rp, 0, sizeof(rp));
    int rc = 0;
    for (int pages = 0;; pages++) {
        list_page page;
        if ((rc = list_page_get(c, pfx, token, NULL, &rp, &page, err)))
            break;
        rc = take_page(l, &cap, &page);
        free(token);
        token = page.next_token;
        page.next_token = NULL;
        bool more = page.truncated;
        if (rc == 0 && more && c->url.scheme == SCHEME_OSS && page.url_encoded &&
            !decode_in_place(&token))
            rc = OSSC_E_PROTOCOL;
        list_page_free(&page);
        if (rc) {
            err_set(err, rc, "listing: bad continuation token or out of memory");
            break;
        }
        if (!more)
            break;
        if (pages % 10 == 9)
            LOGI("listed %zu objects so far", l->count);
    }
    free(token);
    reply_free(&rp);
    if (rc) {
        ossc_listing_free(l);
        return rc;
    }
    *out = l;
    return 0;
}

OSSC_API int ossc_head(ossc_client *c, const char *key, uint64_t *size, uint64_t *crc64,
                       int *has_crc64, ossc_error *err)
{
    err_clear(err);
    request r;
    request_init(&r, "HEAD", key);
    reply rp;
    memset(&rp, 0, sizeof(rp));
    char what[1200];
    snprintf(what, sizeof(what), "stat of %s", key);
    int rc = http_perform(c, &r, &rp, what, err);
    request_free(&r);
    if (rc == 0) {
        if (!rp.has_content_length) {
            err_set(err, OSSC_E_PROTOCOL, "%s: reply has no Content-Length", what);
            rc = OSSC_E_PROTOCOL;
        } else {
            *size = rp.content_length;
            *crc64 = rp.crc64;
            *has_crc64 = rp.has_crc64;
        }
    }
    reply_free(&rp);
    return rc;
}

/* ---- ossc_list_fast: key ranges listed concurrently ----
 *
 * A task is a key range (after, upto] below the prefix ("after" NULL: from the start; "upto"
 * NULL: to the end), listed with start-after. A thread that gets a full page while others
 * idle splits the rest of its range: at the character just above those the page's keys
 * spanned, one range per next code point there (numbered names: about a page or more each),
 * else evenly between the range's ends read as numbers over a few code points. Boundaries are
 * valid UTF-8 (stores refuse anything else). Ranges never overlap, so their union is the
 * listing; it is sorted at the end. */

#define FAST_WINDOW 4 /* code points */
#define FAST_BASE 0x110000u
#define FAST_MAX_THREADS 64

typedef unsigned __int128 u128;

typedef struct fast_task {
    char *prefix;          /* NULL: the listing's */
    char *after, *upto;
    struct fast_task *next;
} fast_task;

typedef struct fast_list {
    ossc_client *c;
    const char *prefix;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    fast_task *queue;
    int idle, running, threads;
    ossc_listing *l;
    size_t cap;
    int rc;
    ossc_error err;
} fast_list;

/* The code point at s (UTF-8; a stray byte counts as itself) and its length. */
static uint32_t utf8_next(const unsigned char *s, size_t *len)
{
    unsigned char c = s[0];
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    uint32_t cp = n == 1 ? c : c & (0x7f >> n);
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            *len = 1;
            return c;
        }
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    *len = (size_t)n;
    return cp;
}

/* The FAST_WINDOW code points of s from byte from, as a number in base FAST_BASE (0 past the
 * end): UTF-8's byte order is code point order, so numbers order as keys do. */
static u128 window_value(const char *s, size_t from)
{
    u128 v = 0;
    const unsigned char *p = (const unsigned char *)s + from;
    for (int i = 0; i < FAST_WINDOW; i++) {
        uint32_t cp = 0;
        if (*p) {
            size_t n;
            cp = utf8_next(p, &n);
            p += n;
        }
        v = v * FAST_BASE + cp;
    }
    return v;
}

static size_t utf8_put(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* base[0..from) followed by v's code points as valid UTF-8 (stores refuse anything else),
 * trailing zeros dropped; a zero inside becomes 1 and a surrogate the next code point after
 * them, which keeps the order. */
static char *window_string(const char *base, size_t from, u128 v)
{
    char *s = malloc(from + 4 * FAST_WINDOW + 1);
    if (!s)
        return NULL;
    memcpy(s, base, from);
    uint32_t cps[FAST_WINDOW];
    for (int i = FAST_WINDOW - 1; i >= 0; i--) {
        cps[i] = (uint32_t)(v % FAST_BASE);
        v /= FAST_BASE;
    }
    int last = FAST_WINDOW;
    while (last > 0 && cps[last - 1] == 0)
        last--;
    size_t n = from;
    for (int i = 0; i < last; i++) {
        uint32_t cp = cps[i] ? cps[i] : 1;
        if (cp >= 0xd800 && cp <= 0xdfff)
            cp = 0xe000;
        n += utf8_put(s + n, cp);
    }
    s[n] = '\0';
    return s;
}

static int key_cmp(const char *a, const char *b) { return strcmp(a, b); }

static void fast_push(fast_list *fl, char *prefix, char *after, char *upto)
{
    fast_task *t = calloc(1, sizeof(*t));
    if (!t) {
        free(prefix);
        free(after);
        free(upto);
        if (!fl->rc) {
            fl->rc = OSSC_E_NOMEM;
            err_set(&fl->err, OSSC_E_NOMEM, "out of memory");
        }
        return;
    }
    t->prefix = prefix;
    t->after = after;
    t->upto = upto;
    t->next = fl->queue;
    fl->queue = t;
    pthread_cond_broadcast(&fl->changed);
}

/* Boundaries evenly between after and upto (or the largest key), read as numbers over
 * FAST_WINDOW code points from d. */
static int bounds_even(const char *after, const char *upto, size_t d, int n, char **bounds)
{
    while (d > 0 && ((unsigned char)after[d] & 0xc0) == 0x80)
        d--; /* the window starts a code point */
    u128 lo = window_value(after, d);
    u128 hi = 0;
    if (upto) {
        hi = window_value(upto, d);
    } else {
        for (int i = 0; i < FAST_WINDOW; i++)
            hi = hi * FAST_BASE + (FAST_BASE - 1);
    }
    if (hi <= lo + 1)
        return 0;
    u128 step = (hi - lo) / (u128)n;
    int nb = 0;
    for (int i = 1; step && i < n; i++) {
        char *b = window_string(after, d, lo + step * (u128)i);
        if (!b)
            break;
        bounds[nb++] = b;
    }
    return nb;
}

static void fast_oom(fast_list *fl)
{
    if (!fl->rc) {
        fl->rc = OSSC_E_NOMEM;
        err_set(&fl->err, OSSC_E_NOMEM, "out of memory");
    }
}

static char *dup_or_null(fast_list *fl, const char *s)
{
    char *d = s ? strdup(s) : NULL;
    if (s && !d)
        fast_oom(fl);
    return d;
}

/* The rest of a task (keys under pfx, after `after`, up to upto) split for n threads; the
 * caller keeps the first part through *my_prefix or *my_upto, the others are queued. first is
 * the first key of the page that ended at after. Caller holds the lock.
 *
 * Numbered names: at q, the character just above those the page's keys spanned, the caller
 * keeps the keys under after[0..q] + after[q]; each next code point there is a prefix task
 * (the store lists only its keys, so no page is wasted on keys of another task); one task
 * takes what follows them from start-after after[0..q] + that code point + U+10FFFF x 4 on (a
 * key that sorts after that and under the prefix of the last task comes from both; the
 * listing drops duplicates). Otherwise ranges evenly between after and upto. */
static void fast_split(fast_list *fl, const char *pfx, const char *after, const char *upto,
                       const char *first, int n, char **my_prefix, char **my_upto)
{
    size_t d = 0; /* after and upto agree on after[0..d) */
    if (upto)
        while (after[d] && after[d] == upto[d])
            d++;
    else
        d = strlen(pfx);
    size_t q = 0; /* where the page's keys differ, then the code point before */
    while (first[q] && first[q] == after[q])
        q++;
    if (q > 0)
        q--;
    while (q > 0 && ((unsigned char)after[q] & 0xc0) == 0x80)
        q--;
    if (q >= d && q >= strlen(pfx) && after[q]) {
        size_t len;
        uint32_t cp = utf8_next((const unsigned char *)after + q, &len);
        char *mine = malloc(q + len + 1);
        char *rest = malloc(q + 4 * 5 + 1);
        if (!mine || !rest) {
            free(mine);
            free(rest);
            fast_oom(fl);
            return;
        }
        memcpy(mine, after, q + len);
        mine[q + len] = '\0';
        *my_prefix = mine;
        uint32_t c = cp;
        for (int k = 1; k < n; k++) {
            c = cp + (uint32_t)k;
            if (c >= 0xd800 && c <= 0xdfff)
                c += 0x800;
            if (c > 0x10ffff)
                break;
            char *p = malloc(q + 5);
            if (!p) {
                fast_oom(fl);
                break;
            }
            memcpy(p, after, q);
            p[q + utf8_put(p + q, c)] = '\0';
            if (upto && key_cmp(p, upto) > 0) {
                free(p);
                break;
            }
            fast_push(fl, p, NULL, dup_or_null(fl, upto));
        }
        memcpy(rest, after, q);
        size_t m = q + utf8_put(rest + q, c > 0x10ffff ? 0x10ffff : c);
        for (int i = 0; i < 4; i++)
            m += utf8_put(rest + m, 0x10ffff);
        rest[m] = '\0';
        if (upto && key_cmp(rest, upto) >= 0)
            free(rest);
        else
            fast_push(fl, dup_or_null(fl, pfx), rest, dup_or_null(fl, upto));
        return;
    }
    char *bounds[FAST_MAX_THREADS];
    int nc = bounds_even(after, upto, d, n, bounds), nb = 0;
    for (int i = 0; i < nc; i++) { /* keep those strictly between after and upto, in order */
        if (key_cmp(bounds[i], after) <= 0 || (upto && key_cmp(bounds[i], upto) >= 0) ||
            (nb && key_cmp(bounds[i], bounds[nb - 1]) <= 0))
            free(bounds[i]);
        else
            bounds[nb++] = bounds[i];
    }
    if (!nb)
        return;
    /* (after, b0] stays with the caller; (b0, b1], ..., (b_last, upto] are queued. */
    *my_upto = bounds[0];
    for (int i = 0; i < nb; i++)
        fast_push(fl, dup_or_null(fl, pfx), dup_or_null(fl, bounds[i]),
                  i + 1 < nb ? bounds[i + 1] : dup_or_null(fl, upto));
}

static int fast_page(fast_list *fl, const char *prefix, const char *after, list_page *page,
                     ossc_error *err)
{
    reply rp;
    memset(&rp, 0, sizeof(rp));
    int rc = list_page_get(fl->c, prefix, NULL, after, &rp, page, err);
    reply_free(&rp);
    return rc;
}

static void *fast_worker(void *arg)
{
    fast_list *fl = arg;
    pthread_mutex_lock(&fl->lock);
    for (;;) {
        fl->idle++;
        while (!fl->queue && fl->running > 0 && !fl->rc)
            pthread_cond_wait(&fl->changed, &fl->lock);
        fl->idle--;
        if (!fl->queue || fl->rc)
            break;
        fast_task *t = fl->queue;
        fl->queue = t->next;
        fl->running++;
        char *pfx = t->prefix, *after = t->after, *upto = t->upto;
        free(t);
        for (;;) {
            pthread_mutex_unlock(&fl->lock);
            list_page page;
            memset(&page, 0, sizeof(page));
            ossc_error e;
            err_clear(&e);
            int rc = fast_page(fl, pfx ? pfx : fl->prefix, after, &page, &e);
            /* Keys past upto belong to another range. */
            bool beyond = false;
            size_t keep = page.count;
            for (size_t i = 0; rc == 0 && upto && i < page.count; i++)
                if (key_cmp(page.objects[i].key, upto) > 0) {
                    keep = i;
                    beyond = true;
                    break;
                }
            char *last = NULL, *first = NULL;
            if (rc == 0 && keep > 0 && page.truncated && !beyond) {
                last = strdup(page.objects[keep - 1].key);
                first = strdup(page.objects[0].key);
                if (!last || !first)
                    rc = OSSC_E_NOMEM;
            }
            pthread_mutex_lock(&fl->lock);
            if (rc == 0) {
                size_t all = page.count;
                page.count = keep;
                rc = take_page(fl->l, &fl->cap, &page);
                page.count = all - keep; /* the keys beyond are freed below */
                if (page.count) /* an empty page has no array at all */
                    memmove(page.objects, page.objects + keep, page.count * sizeof(ossc_object));
            }
            list_page_free(&page);
            if (rc && !fl->rc) {
                fl->rc = rc;
                if (e.code)
                    fl->err = e;
                else
                    err_set(&fl->err, rc, "out of memory");
            }
            if (rc || !last || fl->rc) {
                free(last);
                free(first);
                break;
            }
            free(after);
            after = last;
            if (fl->idle > 0 && !fl->queue) {
                char *my_prefix = NULL, *my_upto = NULL;
                fast_split(fl, pfx ? pfx : fl->prefix, after, upto, first,
                           fl->idle + 1 > 16 ? 16 : fl->idle + 1, &my_prefix, &my_upto);
                if (my_prefix) {
                    free(pfx);
                    pfx = my_prefix;
                }
                if (my_upto) {
                    free(upto);
                    upto = my_upto;
                }
            }
            free(first);
        }
        free(pfx);
        free(after);
        free(upto);
        fl->running--;
        pthread_cond_broadcast(&fl->changed);
    }
    pthread_cond_broadcast(&fl->changed);
    pthread_mutex_unlock(&fl->lock);
    return NULL;
}

static int object_cmp(const void *a, const void *b)
{
    return strcmp(((const ossc_object *)a)->key, ((const ossc_object *)b)->key);
}

OSSC_API int ossc_list_fast(ossc_client *c, const char *prefix, int threads,
                            ossc_listing **out, ossc_error *err)
{
    err_clear(err);
    *out = NULL;
    if (threads <= 0)
        threads = c->s.vcpus * c->s.workers < 16 ? c->s.vcpus * c->s.workers : 16;
    if (threads > FAST_MAX_THREADS)
        threads = FAST_MAX_THREADS;
    if (threads < 1)
        threads = 1;
    fast_list fl;
    memset(&fl, 0, sizeof(fl));
    fl.c = c;
    fl.prefix = prefix ? prefix : c->url.prefix;
    fl.threads = threads;
    err_clear(&fl.err);
    pthread_mutex_init(&fl.lock, NULL);
    pthread_cond_init(&fl.changed, NULL);
    fl.l = calloc(1, sizeof(*fl.l));
    pthread_t tids[FAST_MAX_THREADS];
    int started = 0;
    if (!fl.l) {
        fl.rc = OSSC_E_NOMEM;
        err_set(&fl.err, OSSC_E_NOMEM, "out of memory");
    } else {
        fast_push(&fl, NULL, NULL, NULL);
    }
    for (int i = 0; !fl.rc && i < threads; i++) {
        if (pthread_create(&tids[i], NULL, fast_worker, &fl) != 0)
            break;
        started++;
    }
    if (!started && !fl.rc) {
        fl.rc = OSSC_E_NOMEM;
        err_set(&fl.err, OSSC_E_NOMEM, "cannot start listing threads");
    }
    for (int i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    while (fl.queue) {
        fast_task *t = fl.queue;
        fl.queue = t->next;
        free(t->prefix);
        free(t->after);
        free(t->upto);
        free(t);
    }
    pthread_cond_destroy(&fl.changed);
    pthread_mutex_destroy(&fl.lock);
    if (fl.rc) {
        if (err)
            *err = fl.err;
        ossc_listing_free(fl.l);
        return fl.rc;
    }
    if (fl.l->count > 1)
        qsort(fl.l->objects, fl.l->count, sizeof(ossc_object), object_cmp);
    size_t kept = 0; /* a key two tasks listed (fast_split) once */
    for (size_t i = 0; i < fl.l->count; i++) {
        if (kept && strcmp(fl.l->objects[kept - 1].key, fl.l->objects[i].key) == 0)
            free((char *)fl.l->objects[i].key);
        else
            fl.l->objects[kept++] = fl.l->objects[i];
    }
    fl.l->count = kept;
    *out = fl.l;
    return 0;
}
