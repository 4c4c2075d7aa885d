/* sign_oss_v4.c: OSS signature V4 (OSS4-HMAC-SHA256), as oss2's ProviderAuthV4 computes it.
 * Unlike AWS, the canonical URI always holds the bucket, and only x-oss-*, content-type and
 * content-md5 headers are signed. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

static bool signed_by_default(const char *lower_name)
{
    return strncmp(lower_name, "x-oss-", 6) == 0 || strcmp(lower_name, "content-type") == 0 ||
           strcmp(lower_name, "content-md5") == 0;
}

static void canonical_headers(const request *r, strbuf *sb)
{
    kv hs[REQ_MAX_HEADERS];
    char lower[REQ_MAX_HEADERS][64];
    size_t n = 0;
    for (size_t i = 0; i < r->n_headers; i++) {
        size_t k = 0;
        for (; r->headers[i].name[k] && k < 63; k++)
            lower[n][k] = (char)(r->headers[i].name[k] | 32);
        lower[n][k] = '\0';
        if (!signed_by_default(lower[n]))
            continue;
        hs[n].name = lower[n];
        hs[n].value = r->headers[i].value;
        n++;
    }
    qsort(hs, n, sizeof(kv), kv_compare_name);
    for (size_t i = 0; i < n; i++) {
        /* oss2 strips the value */
        const char *v = hs[i].value;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t len = strlen(v);
        while (len && (v[len - 1] == ' ' || v[len - 1] == '\t'))
            len--;
        sb_printf(sb, "%s:%.*s\n", hs[i].name, (int)len, v);
    }
}

int sign_oss_v4(const sign_input *in, request *r, strbuf *auth)
{
    const ossc_client *c = in->client;
    char stamp[32], day[16];
    struct tm tm;
    gmtime_r(&in->unix_time, &tm);
    strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
    strftime(day, sizeof(day), "%Y%m%d", &tm);
    if (*in->creds->security_token)
        request_set_header(r, "x-oss-security-token", in->creds->security_token);
    request_set_header(r, "x-oss-date", stamp);
    request_set_header(r, "x-oss-content-sha256", "UNSIGNED-PAYLOAD");

    strbuf creq, sts;
    sb_init(&creq);
    sb_init(&sts);
    sb_printf(&creq, "%s\n/", r->method);
    url_encode(&creq, c->url.bucket, false);
    sb_puts(&creq, "/");
    if (r->key)
        url_encode(&creq, r->key, true);
    sb_puts(&creq, "\n");
    canonical_query(r, false, &creq);
    sb_puts(&creq, "\n");
    canonical_headers(r, &creq);
    sb_puts(&creq, "\n\nUNSIGNED-PAYLOAD"); /* blank additional-headers line, then the hash */

    char creq_hash[65];
    sha256_hex(creq.data ? creq.data : "", creq.len, creq_hash);
    sb_printf(&sts, "OSS4-HMAC-SHA256\n%s\n%s/%s/%s/aliyun_v4_request\n%s", stamp, day,
              c->s.region, c->product, creq_hash);
    int rc = 0;
    if (creq.oom || sts.oom) {
        rc = OSSC_E_NOMEM;
        goto out;
    }
    LOGD("oss v4 string to sign: %s", sts.data); /* the canonical request holds the token */

    strbuf k0;
    sb_init(&k0);
    sb_printf(&k0, "aliyun_v4%s", in->creds->access_key_secret);
    unsigned char key[32], sig[32];
    hmac_sha256(k0.data, k0.len, day, strlen(day), key);
    memset(k0.data, 0, k0.len); /* it holds the secret */
    sb_free(&k0);
    hmac_sha256(key, 32, c->s.region, strlen(c->s.region), key);
    hmac_sha256(key, 32, c->product, strlen(c->product), key);
    hmac_sha256(key, 32, "aliyun_v4_request", 17, key);
    hmac_sha256(key, 32, sts.data, sts.len, sig);
    char sig_hex[65];
    to_hex(sig, 32, sig_hex);
    sb_printf(auth, "OSS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aliyun_v4_request, Signature=%s",
              in->creds->access_key_id, day, c->s.region, c->product, sig_hex);
out:
    sb_free(&creq);
    sb_free(&sts);
    return rc;
}
