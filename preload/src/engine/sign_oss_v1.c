/* sign_oss_v1.c: OSS signature V1 (HMAC-SHA1), as the oss2 SDK's ProviderAuth computes it:
 *   VERB \n Content-MD5 \n Content-Type \n Date \n CanonicalizedOSSHeaders CanonicalizedResource
 * The resource is the raw key plus only the whitelisted sub-resources. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

/* oss2.auth.ProviderAuth._subresource_key_set, the parameters that are part of the resource. */
static const char *const subresources[] = {
    "accessPoint", "accessPointPolicy", "acl", "append", "asyncFetch",
    "bucketArchiveDirectRead", "bucketInfo", "callback", "callback-var", "cname", "comp",
    "continuation-token", "cors", "delete", "encryption", "endTime", "group", "httpsConfig",
    "inventory", "inventoryId", "lifecycle", "link", "live", "location", "logging", "metaQuery",
    "objectInfo", "objectMeta", "partNumber", "policy", "position", "publicAccessBlock", "qos",
    "qosInfo", "qosRequester", "redundancyTransition", "referer", "regionList", "replication",
    "replicationLocation", "replicationProgress", "requestPayment", "requesterQosInfo",
    "resourceGroup", "resourcePool", "resourcePoolBuckets", "resourcePoolInfo",
    "response-cache-control", "response-content-disposition", "response-content-encoding",
    "response-content-language", "response-content-type", "response-expires", "restore",
    "security-token", "sequential", "startTime", "stat", "status", "style", "styleName",
    "symlink", "tagging", "transferAcceleration", "uploadId", "uploads", "versionId",
    "versioning", "versions", "vod", "website", "worm", "wormExtend", "wormId",
    "x-oss-ac-forward-allow", "x-oss-ac-source-ip", "x-oss-ac-subnet-mask", "x-oss-ac-vpc-id",
    "x-oss-access-point-name", "x-oss-async-process", "x-oss-process",
    "x-oss-redundancy-transition-taskid", "x-oss-request-payer", "x-oss-target-redundancy-type",
    "x-oss-traffic-limit", "x-oss-write-get-object-response",
};

static bool is_subresource(const char *name)
{
    for (size_t i = 0; i < sizeof(subresources) / sizeof(subresources[0]); i++)
        if (strcmp(subresources[i], name) == 0)
            return true;
    return false;
}

static void canonical_resource(const sign_input *in, strbuf *sb)
{
    const request *r = in->req;
    sb_printf(sb, "/%s/%s", in->client->url.bucket, r->key ? r->key : "");
    kv params[REQ_MAX_QUERY];
    size_t n = 0;
    for (size_t i = 0; i < r->n_query; i++)
        if (is_subresource(r->query[i].name))
            params[n++] = r->query[i];
    qsort(params, n, sizeof(kv), kv_compare_name);
    for (size_t i = 0; i < n; i++) {
        sb_puts(sb, i ? "&" : "?");
        sb_puts(sb, params[i].name);
        if (params[i].value && *params[i].value) {
            sb_puts(sb, "=");
            sb_puts(sb, params[i].value);
        }
    }
}

static void canonical_oss_headers(const request *r, strbuf *sb)
{
    kv hs[REQ_MAX_HEADERS];
    size_t n = 0;
    char lower[REQ_MAX_HEADERS][64];
    for (size_t i = 0; i < r->n_headers; i++) {
        if (strncasecmp(r->headers[i].name, "x-oss-", 6) != 0)
            continue;
        size_t k = 0;
        for (; r->headers[i].name[k] && k < 63; k++)
            lower[n][k] = (char)(r->headers[i].name[k] | 32);
        lower[n][k] = '\0';
        hs[n].name = lower[n];
        hs[n].value = r->headers[i].value;
        n++;
    }
    qsort(hs, n, sizeof(kv), kv_compare_name);
    for (size_t i = 0; i < n; i++)
        sb_printf(sb, "%s:%s\n", hs[i].name, hs[i].value);
}

int sign_oss_v1(const sign_input *in, request *r, strbuf *auth)
{
    char date[64];
    struct tm tm;
    gmtime_r(&in->unix_time, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    request_set_header(r, "Date", date);
    if (*in->creds->security_token)
        request_set_header(r, "x-oss-security-token", in->creds->security_token);

    const char *md5 = request_header(r, "Content-MD5");
    const char *type = request_header(r, "Content-Type");
    const char *x_date = request_header(r, "x-oss-date");
    strbuf sts;
    sb_init(&sts);
    sb_printf(&sts, "%s\n%s\n%s\n%s\n", r->method, md5 ? md5 : "", type ? type : "",
              x_date ? x_date : date);
    canonical_oss_headers(r, &sts);
    canonical_resource(in, &sts);
    if (sts.oom) {
        sb_free(&sts);
        return OSSC_E_NOMEM;
    }
    if (!*in->creds->security_token) /* else it holds the token */
        LOGD("oss v1 string to sign: %s", sts.data);

    unsigned char mac[20];
    const char *secret = in->creds->access_key_secret;
    hmac_sha1(secret, strlen(secret), sts.data, sts.len, mac);
    sb_free(&sts);
    sb_printf(auth, "OSS %s:", in->creds->access_key_id);
    base64(mac, sizeof(mac), auth);
    return 0;
}
