/* url.c: oss:// and s3:// URLs, endpoints, region derivation and percent-encoding. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Bucket names per OSS and S3 rules: 3-63 of [a-z0-9-.], starting and ending alphanumeric. */
static bool valid_bucket(const char *b, size_t n)
{
    if (n < 3 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = b[i];
        bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
        if (!alnum && ch != '-' && ch != '.')
            return false;
        if ((i == 0 || i == n - 1) && !alnum)
            return false;
    }
    return true;
}

int url_parse_store(const char *url, store_url *out, ossc_error *err)
{
    memset(out, 0, sizeof(*out));
    const char *rest;
    if (url && strncmp(url, "oss://", 6) == 0) {
        out->scheme = SCHEME_OSS;
        rest = url + 6;
    } else if (url && strncmp(url, "s3://", 5) == 0) {
        out->scheme = SCHEME_S3;
        rest = url + 5;
    } else {
        err_set(err, OSSC_E_CONFIG, "'%s' is not a store URL: expected oss://bucket/prefix/ or "
                "s3://bucket/prefix/", url ? url : "");
        return OSSC_E_CONFIG;
    }
    const char *slash = strchr(rest, '/');
    size_t blen = slash ? (size_t)(slash - rest) : strlen(rest);
    if (!valid_bucket(rest, blen)) {
        err_set(err, OSSC_E_CONFIG, "'%s': '%.*s' is not a valid bucket name (3-63 characters "
                "of a-z, 0-9, '-' and '.')", url, (int)(blen > 80 ? 80 : blen), rest);
        return OSSC_E_CONFIG;
    }
    memcpy(out->bucket, rest, blen);
    out->prefix = strdup(slash ? slash + 1 : "");
    if (!out->prefix) {
        err_set(err, OSSC_E_NOMEM, "out of memory");
        return OSSC_E_NOMEM;
    }
    return 0;
}

int url_parse_endpoint(const char *text, endpoint *out, ossc_error *err)
{
    memset(out, 0, sizeof(*out));
    const char *host = text;
    if (strncmp(text, "http://", 7) == 0) {
        strcpy(out->scheme, "http");
        host += 7;
    } else if (strncmp(text, "https://", 8) == 0) {
        strcpy(out->scheme, "https");
        host += 8;
    } else if (strstr(text, "://")) {
        err_set(err, OSSC_E_CONFIG, "endpoint '%s': only http:// and https:// are supported",
                text);
        return OSSC_E_CONFIG;
    } else {
        strcpy(out->scheme, "http"); /* the contract: the scheme defaults to http */
    }
    size_t n = strcspn(host, "/?#");
    if (host[n] == '/' && host[n + 1] == '\0')
        ; /* a trailing slash is harmless */
    else if (host[n] != '\0') {
        err_set(err, OSSC_E_CONFIG, "endpoint '%s' must be a bare host[:port], without a path",
                text);
        return OSSC_E_CONFIG;
    }
    if (n == 0 || n >= sizeof(out->host)) {
        err_set(err, OSSC_E_CONFIG, "endpoint '%s' has no usable host name", text);
        return OSSC_E_CONFIG;
    }
    for (size_t i = 0; i < n; i++) {
        char ch = host[i];
        if (ch <= ' ' || ch == '@' || ch == '\\' || (unsigned char)ch >= 0x7f) {
            err_set(err, OSSC_E_CONFIG, "endpoint '%s' has a character not allowed in a host",
                    text);
            return OSSC_E_CONFIG;
        }
    }
    memcpy(out->host, host, n);
    return 0;
}

/* oss-cn-beijing.aliyuncs.com and oss-cn-beijing-internal.aliyuncs.com both name cn-beijing. */
int url_derive_oss_region(const char *host, char *out, size_t cap)
{
    const char *h = strncmp(host, "s3.", 3) == 0 ? host + 3 : host;
    if (strncmp(h, "oss-", 4) != 0)
        return -1;
    h += 4;
    size_t n = strcspn(h, ".:");
    const char *suffix = "-internal";
    size_t sl = strlen(suffix);
    if (n > sl && memcmp(h + n - sl, suffix, sl) == 0)
        n -= sl;
    if (n == 0 || n >= cap)
        return -1;
    memcpy(out, h, n);
    out[n] = '\0';
    return 0;
}

void url_encode(strbuf *sb, const char *s, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char ch = *p;
        bool plain = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                     (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.' ||
                     ch == '~' || (keep_slash && ch == '/');
        if (plain) {
            sb_append(sb, (const char *)p, 1);
        } else {
            char esc[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            sb_append(sb, esc, 3);
        }
    }
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* As S3 and OSS write keys under encoding-type=url: '+' is a space, a literal '+' is %2B. */
bool url_decode(const char *s, strbuf *out)
{
    for (const char *p = s; *p; p++) {
        if (*p == '+') {
            sb_append(out, " ", 1);
        } else if (*p == '%') {
            int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);
            if (hi < 0 || lo < 0)
                return false;
            char ch = (char)(hi * 16 + lo);
            sb_append(out, &ch, 1);
            p += 2;
        } else {
            sb_append(out, p, 1);
        }
    }
    if (!out->data)
        sb_append(out, "", 0);
    return true;
}
