/* request.c: one S3/OSS request: its URL (virtual-hosted or path-style, key and query
 * percent-encoded) and its signed headers. Signed anew for every attempt. */
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

void request_init(request *r, const char *method, const char *key)
{
    memset(r, 0, sizeof(*r));
    r->method = method;
    r->key = key;
}

void request_add_query(request *r, const char *name, const char *value)
{
    if (r->n_query < REQ_MAX_QUERY)
        r->query[r->n_query++] = (kv){name, value};
}

void request_add_header(request *r, const char *name, const char *value)
{
    if (r->n_headers < REQ_MAX_HEADERS)
        r->headers[r->n_headers++] = (kv){name, value};
}

void request_set_header(request *r, const char *name, const char *value)
{
    if (r->n_owned + 2 > sizeof(r->owned) / sizeof(r->owned[0]))
        return;
    char *n = strdup(name), *v = strdup(value);
    r->owned[r->n_owned++] = n;
    r->owned[r->n_owned++] = v;
    if (n && v)
        request_add_header(r, n, v);
}

const char *request_header(const request *r, const char *name)
{
    for (size_t i = 0; i < r->n_headers; i++)
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

/* Drops what a previous attempt added, so the request can be signed again. */
static void request_reset_signing(request *r)
{
    for (size_t i = 0; i < r->n_owned; i++) {
        if (r->owned[i])
            memset(r->owned[i], 0, strlen(r->owned[i])); /* may hold a token */
        free(r->owned[i]);
    }
    r->n_owned = 0;
    free(r->url);
    r->url = NULL;
    curl_slist_free_all(r->header_list);
    r->header_list = NULL;
}

void request_free(request *r)
{
    request_reset_signing(r);
}

int request_prepare(ossc_client *c, request *r, time_t unix_time, ossc_error *err)
{
    /* Keep the caller's headers; drop the ones the last signing added. */
    size_t caller_headers = r->n_headers;
    for (size_t i = 0; i < r->n_headers; i++) {
        for (size_t k = 0; k < r->n_owned; k++) {
            if (r->headers[i].name == r->owned[k]) {
                caller_headers = i;
                goto found;
            }
        }
    }
found:
    r->n_headers = caller_headers;
    request_reset_signing(r);

    credentials creds;
    int rc = creds_get(&c->creds, &creds, err);
    if (rc)
        return rc;

    strbuf host, path, url, auth;
    sb_init(&host);
    sb_init(&path);
    sb_init(&url);
    sb_init(&auth);
    /* curl leaves a default port out of the Host header it sends, so the host we sign must too
     * (as botocore's does): "h:80" over http and "h:443" over https become "h". */
    int ep_len = (int)strlen(c->ep.host);
    const char *dflt = strcmp(c->ep.scheme, "https") == 0 ? ":443" : ":80";
    size_t dl = strlen(dflt);
    if ((size_t)ep_len > dl && strcmp(c->ep.host + ep_len - dl, dflt) == 0)
        ep_len -= (int)dl;
    if (c->s.path_style) {
        sb_printf(&host, "%.*s", ep_len, c->ep.host);
        sb_printf(&path, "/%s", c->url.bucket);
        if (r->key) {
            sb_puts(&path, "/");
            url_encode(&path, r->key, true);
        } else if (c->s.signature != SIG_AWS_V4) {
            sb_puts(&path, "/"); /* OSS: "/bucket/", as oss2 sends it (and V4 signs it) */
        }
    } else {
        sb_printf(&host, "%s.%.*s", c->url.bucket, ep_len, c->ep.host);
        sb_puts(&path, "/");
        if (r->key)
            url_encode(&path, r->key, true);
    }
    sb_printf(&url, "%s://%s%s", c->ep.scheme, host.data, path.data);
    strbuf query;
    sb_init(&query);
    canonical_query(r, c->s.signature == SIG_AWS_V4, &query);
    if (query.len)
        sb_printf(&url, "?%s", query.data);
    sb_free(&query);

    sign_input in = {c, &creds, r, host.data, path.data, unix_time};
    switch (c->s.signature) {
    case SIG_OSS_V1:
        rc = sign_oss_v1(&in, r, &auth);
        break;
    case SIG_OSS_V4:
        rc = sign_oss_v4(&in, r, &auth);
        break;
    default:
        rc = sign_aws_v4(&in, r, &auth);
        break;
    }
    memset(&creds, 0, sizeof(creds));
    if (rc == 0 && !auth.oom && !url.oom && !host.oom && !path.oom) {
        request_set_header(r, "Authorization", auth.data);
        strbuf line;
        sb_init(&line);
        for (size_t i = 0; i < r->n_headers; i++) {
            line.len = 0;
            sb_printf(&line, "%s: %s", r->headers[i].name, r->headers[i].value);
            struct curl_slist *next = line.oom ? NULL
                                               : curl_slist_append(r->header_list, line.data);
            if (!next) {
                rc = OSSC_E_NOMEM;
                break;
            }
            r->header_list = next;
        }
        sb_free(&line);
        r->url = sb_steal(&url);
        if (!r->url)
            rc = OSSC_E_NOMEM;
    } else if (rc == 0) {
        rc = OSSC_E_NOMEM;
    }
    if (rc == OSSC_E_NOMEM)
        err_set(err, rc, "out of memory while signing a request");
    sb_free(&host);
    sb_free(&path);
    sb_free(&url);
    sb_free(&auth);
    return rc;
}

OSSC_API char *ossc_sign_request(ossc_client *c, const char *method, const char *key,
                                 const char *const *query, size_t n_query,
                                 const char *const *headers, size_t n_headers, int64_t unix_time,
                                 ossc_error *err)
{
    err_clear(err);
    if (n_query > REQ_MAX_QUERY || n_headers > REQ_MAX_HEADERS / 2) {
        err_set(err, OSSC_E_CONFIG, "too many query parameters or headers");
        return NULL;
    }
    request r;
    request_init(&r, method, key && *key ? key : NULL);
    char *copies[REQ_MAX_QUERY + REQ_MAX_HEADERS];
    size_t n_copies = 0;
    for (size_t i = 0; i < n_query; i++) {
        char *q = strdup(query[i]);
        copies[n_copies++] = q;
        if (!q)
            goto oom;
        char *eq = strchr(q, '=');
        if (eq)
            *eq = '\0';
        request_add_query(&r, q, eq ? eq + 1 : NULL);
    }
    for (size_t i = 0; i < n_headers; i++) {
        char *h = strdup(headers[i]);
        copies[n_copies++] = h;
        if (!h)
            goto oom;
        char *colon = strchr(h, ':');
        if (!colon) {
            err_set(err, OSSC_E_CONFIG, "header '%s' has no ':'", headers[i]);
            goto fail;
        }
        *colon = '\0';
        const char *v = colon + 1;
        while (*v == ' ')
            v++;
        request_add_header(&r, h, v);
    }
    char *out = NULL;
    if (request_prepare(c, &r, (time_t)unix_time, err) == 0) {
        strbuf sb;
        sb_init(&sb);
        sb_printf(&sb, "%s\n", r.url);
        const char *host_start = strstr(r.url, "://") + 3;
        sb_printf(&sb, "Host: %.*s\n", (int)strcspn(host_start, "/"), host_start);
        for (struct curl_slist *h = r.header_list; h; h = h->next)
            sb_printf(&sb, "%s\n", h->data);
        out = sb_steal(&sb);
    }
    request_free(&r);
    for (size_t i = 0; i < n_copies; i++)
        free(copies[i]);
    return out;
oom:
    err_set(err, OSSC_E_NOMEM, "out of memory");
fail:
    request_free(&r);
    for (size_t i = 0; i < n_copies; i++)
        free(copies[i]);
    return NULL;
}
