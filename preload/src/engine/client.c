/* client.c: a client bound to one store URL: settings, endpoint, credentials; and the
 * metadata calls (list, head) that run synchronously on the caller's thread. */
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

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
    free(c->url.prefix);
    free(c);
    return NULL;
}

OSSC_API void ossc_client_free(ossc_client *c)
{
    if (!c)
        return;
    creds_destroy(&c->creds);
    free(c->url.prefix);
    free(c);
}

OSSC_API char *ossc_client_settings_json(const ossc_client *c) { return settings_to_json(&c->s); }

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
    char *json = settings_to_json(&s);
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
        request r;
        request_init(&r, "GET", NULL);
        request_add_query(&r, "list-type", "2");
        request_add_query(&r, "prefix", pfx);
        request_add_query(&r, "max-keys", LIST_PAGE_KEYS);
        request_add_query(&r, "encoding-type", "url");
        if (token)
            request_add_query(&r, "continuation-token", token);
        char what[256];
        snprintf(what, sizeof(what), "listing %s://%s/%s", c->url.scheme == SCHEME_S3 ? "s3" : "oss",
                 c->url.bucket, pfx);
        rc = http_perform(c, &r, &rp, what, err);
        request_free(&r);
        if (rc)
            break;
        list_page page;
        if ((rc = xml_parse_list_page(rp.body.data, rp.body.len, &page, err)))
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
