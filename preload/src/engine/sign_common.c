/* sign_common.c: the hashing and encoding steps every signer shares (OpenSSL). */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

void hmac_sha1(const void *key, size_t klen, const void *msg, size_t mlen, unsigned char out[20])
{
    unsigned int n = 20;
    HMAC(EVP_sha1(), key, (int)klen, msg, mlen, out, &n);
}

void hmac_sha256(const void *key, size_t klen, const void *msg, size_t mlen,
                 unsigned char out[32])
{
    unsigned int n = 32;
    HMAC(EVP_sha256(), key, (int)klen, msg, mlen, out, &n);
}

void to_hex(const unsigned char *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = '\0';
}

void sha256_hex(const void *msg, size_t len, char out[65])
{
    unsigned char digest[32];
    SHA256(msg, len, digest);
    to_hex(digest, 32, out);
}

void base64(const unsigned char *in, size_t n, strbuf *out)
{
    char buf[4 * ((64 + 2) / 3) + 1];
    if (n > 64)
        return;
    int len = EVP_EncodeBlock((unsigned char *)buf, in, (int)n);
    sb_append(out, buf, (size_t)len);
}

int kv_compare_name(const void *a, const void *b)
{
    const kv *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    return strcmp(x->value ? x->value : "", y->value ? y->value : "");
}

/* Both V4 flavours: every parameter, name and value strictly encoded, sorted, "k=v" or "k"
 * for OSS (empty value) and "k=" for AWS. */
void canonical_query(const request *r, bool aws, strbuf *out)
{
    strbuf enc[REQ_MAX_QUERY];
    kv items[REQ_MAX_QUERY];
    for (size_t i = 0; i < r->n_query; i++) {
        sb_init(&enc[i]);
        url_encode(&enc[i], r->query[i].name, false);
        sb_append(&enc[i], "", 1); /* separator: name NUL value */
        size_t name_len = enc[i].len;
        if (r->query[i].value)
            url_encode(&enc[i], r->query[i].value, false);
        sb_append(&enc[i], "", 0);
        items[i].name = enc[i].data;
        items[i].value = enc[i].oom ? "" : enc[i].data + name_len;
    }
    qsort(items, r->n_query, sizeof(kv), kv_compare_name);
    for (size_t i = 0; i < r->n_query; i++) {
        if (i)
            sb_puts(out, "&");
        sb_puts(out, items[i].name);
        if (*items[i].value || aws) {
            sb_puts(out, "=");
            sb_puts(out, items[i].value);
        }
    }
    for (size_t i = 0; i < r->n_query; i++)
        sb_free(&enc[i]);
}
