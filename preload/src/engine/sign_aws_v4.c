/* sign_aws_v4.c: AWS Signature V4 for s3:// (as botocore's S3SigV4Auth computes it): the
 * canonical URI is the path as sent, and host, every header we send and x-amz-* are signed. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

int sign_aws_v4(const sign_input *in, request *r, strbuf *auth)
{
    const ossc_client *c = in->client;
    char stamp[32], day[16];
    struct tm tm;
    gmtime_r(&in->unix_time, &tm);
    strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
    strftime(day, sizeof(day), "%Y%m%d", &tm);
    request_set_header(r, "x-amz-content-sha256", "UNSIGNED-PAYLOAD");
    request_set_header(r, "x-amz-date", stamp);
    if (*in->creds->security_token)
        request_set_header(r, "x-amz-security-token", in->creds->security_token);

    kv hs[REQ_MAX_HEADERS + 1];
    char lower[REQ_MAX_HEADERS + 1][64];
    size_t n = 0;
    hs[n].name = "host";
    hs[n++].value = in->host;
    for (size_t i = 0; i < r->n_headers; i++) {
        size_t k = 0;
        for (; r->headers[i].name[k] && k < 63; k++)
            lower[n][k] = (char)(r->headers[i].name[k] | 32);
        lower[n][k] = '\0';
        hs[n].name = lower[n];
        hs[n].value = r->headers[i].value;
        n++;
    }
    qsort(hs, n, sizeof(kv), kv_compare_name);

    strbuf creq, sts, names;
    sb_init(&creq);
    sb_init(&sts);
    sb_init(&names);
    sb_printf(&creq, "%s\n%s\n", r->method, in->canonical_uri);
    canonical_query(r, true, &creq);
    sb_puts(&creq, "\n");
    for (size_t i = 0; i < n; i++) {
        sb_printf(&creq, "%s:%s\n", hs[i].name, hs[i].value);
        sb_printf(&names, "%s%s", i ? ";" : "", hs[i].name);
    }
    sb_printf(&creq, "\n%s\nUNSIGNED-PAYLOAD", names.data ? names.data : "");

    char creq_hash[65];
    sha256_hex(creq.data ? creq.data : "", creq.len, creq_hash);
    sb_printf(&sts, "AWS4-HMAC-SHA256\n%s\n%s/%s/s3/aws4_request\n%s", stamp, day, c->s.region,
              creq_hash);
    int rc = 0;
    if (creq.oom || sts.oom || names.oom) {
        rc = OSSC_E_NOMEM;
        goto out;
    }
    LOGD("aws v4 string to sign: %s", sts.data); /* the canonical request holds the token */

    strbuf k0;
    sb_init(&k0);
    sb_printf(&k0, "AWS4%s", in->creds->access_key_secret);
    unsigned char key[32], sig[32];
    hmac_sha256(k0.data, k0.len, day, strlen(day), key);
    memset(k0.data, 0, k0.len);
    sb_free(&k0);
    hmac_sha256(key, 32, c->s.region, strlen(c->s.region), key);
    hmac_sha256(key, 32, "s3", 2, key);
    hmac_sha256(key, 32, "aws4_request", 12, key);
    hmac_sha256(key, 32, sts.data, sts.len, sig);
    char sig_hex[65];
    to_hex(sig, 32, sig_hex);
    sb_printf(auth, "AWS4-HMAC-SHA256 Credential=%s/%s/%s/s3/aws4_request, SignedHeaders=%s, "
              "Signature=%s", in->creds->access_key_id, day, c->s.region, names.data, sig_hex);
out:
    sb_free(&creq);
    sb_free(&sts);
    sb_free(&names);
    return rc;
}
