"""The engine's request signing against the official SDKs, with the SDK clocks pinned.

For every request in the table (object GET, ranged GET, HEAD, ListObjectsV2 with and without a
continuation token; the writes: PutObject, multipart initiate/part/complete/abort, DeleteObject,
CopyObject; over keys with awkward characters), with and without an STS token, the
Authorization header that libossc computes (ossc.Client.sign) must equal:
  - oss://, signature v1: oss2.ProviderAuth (HMAC-SHA1)
  - oss://, signature v4: oss2.ProviderAuthV4 (OSS4-HMAC-SHA256)
  - s3://:               botocore.auth.S3SigV4Auth (AWS4-HMAC-SHA256, UNSIGNED-PAYLOAD)
and the URL it builds must be the one the SDK requests (host, key encoding, query).

A second group drives the SDKs end to end (oss2.Bucket / boto3 client, transport stubbed out),
feeds the engine exactly the request the SDK built, and compares URL and Authorization.

No store is needed: nothing here opens a connection.
"""

from __future__ import annotations

import datetime as _dt
from email.utils import formatdate
from typing import Optional
from urllib.parse import parse_qsl, quote, unquote, urlsplit

# The SDKs are test dependencies (pyproject's [test] extra): a failed import fails the module,
# it never skips it.
import boto3
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.credentials
import oss2.api
import oss2.auth
import oss2.credentials
import oss2.http
import oss2.models
import oss2.utils
import pytest
import requests

import ossc  # noqa: E402

AK = "LTAI5tSigningTestKeyId"
SK = "sEcReT/with+plus=and/slash0123456789abc"  # '/', '+', '=' as real secrets have
TOKEN = "CAIS+sts/token==with%odd&chars~" + "x" * 200
WHEN = 1700000000  # 2023-11-14T22:13:20Z

OSS_ENDPOINT = "oss-cn-hangzhou.aliyuncs.com"
OSS_REGION = "cn-hangzhou"
BUCKET = "my-bucket"

KEYS = [
    "data/model.bin",
    "dir with space/file name.bin",
    "模型/权重 1.bin",
    "a+b/c+d.bin",
    "tilde~dir/x~y.bin",
    "pct%2F%25/100%.bin",
    "k=v/a=b.bin",
    "a&b/c&&d.bin",
    "mix/!$'()*,;:@[]^`{}|\"<>#?.bin",
    "a//b/c.bin",
]

# The table: (id, method, key, query, headers). Headers marked oss_only are left out for s3://.
LIST_QUERY = ["list-type=2", "prefix=a b/模型/", "max-keys=1000", "encoding-type=url"]
CONT_TOKEN = "1Abc/+=&xyz~%20 token"
REQUESTS = []
for i, k in enumerate(KEYS):
    REQUESTS.append((f"get-{i}", "GET", k, [], []))
    REQUESTS.append((f"range-{i}", "GET", k, [],
                     ["Range: bytes=0-99", "x-oss-range-behavior: standard"]))
    REQUESTS.append((f"head-{i}", "HEAD", k, [], []))
REQUESTS += [
    ("list", "GET", None, LIST_QUERY, []),
    ("list-cont", "GET", None, LIST_QUERY + [f"continuation-token={CONT_TOKEN}"], []),
    ("list-plain-prefix", "GET", None,
     ["list-type=2", "prefix=data/", "max-keys=1000", "encoding-type=url"], []),
    ("list-odd-prefix", "GET", None,
     ["list-type=2", "prefix=k=v&a+b~c%d", "max-keys=1000", "encoding-type=url",
      "continuation-token=xyz"], []),
]

# Writes (upload.c): PutObject and UploadPart with Content-MD5, initiate/complete/abort of a
# multipart upload (sub-resources uploads, uploadId, partNumber), DeleteObject, CopyObject.
UPLOAD_ID = "0004B9895DBBB6EC98E/+=~%id"
MD5 = "XrY7u+Ae7tCTyyK7j1rNww=="
COPY_FROM = "/my-bucket/src%20dir/%E6%A8%A1%E5%9E%8B.bin"
for i, k in enumerate(["ckpt/model.pt", "模型/权重 1.bin", "a+b/c&d=e.bin"]):
    REQUESTS += [
        (f"put-{i}", "PUT", k, [], [f"Content-MD5: {MD5}"]),
        (f"initiate-{i}", "POST", k, ["uploads"], ["Content-Type: application/octet-stream",
                                                   "x-amz-checksum-algorithm: CRC32C"]),
        (f"part-{i}", "PUT", k, ["partNumber=7", f"uploadId={UPLOAD_ID}"],
         [f"Content-MD5: {MD5}"]),
        (f"part-crc32c-{i}", "PUT", k, ["partNumber=7", f"uploadId={UPLOAD_ID}"],
         ["x-amz-checksum-crc32c: yZRlqg=="]),
        (f"complete-{i}", "POST", k, [f"uploadId={UPLOAD_ID}"],
         ["Content-Type: application/xml"]),
        (f"abort-{i}", "DELETE", k, [f"uploadId={UPLOAD_ID}"], []),
        (f"delete-{i}", "DELETE", k, [], []),
        (f"copy-{i}", "PUT", k, [], [f"x-oss-copy-source: {COPY_FROM}",
                                     f"x-amz-copy-source: {COPY_FROM}"]),
    ]
REQUESTS.append(("list-uploads", "GET", None, ["uploads", "prefix=ckpt/"], []))

# Settings flavours: (id, url, settings, scheme)
FLAVOURS = [
    ("oss-v1-virtual", "oss://my-bucket/prefix/",
     {"endpoint": OSS_ENDPOINT, "signature": "v1", "addressing": "virtual"}),
    ("oss-v1-path", "oss://my-bucket/prefix/",
     {"endpoint": OSS_ENDPOINT, "signature": "v1", "addressing": "path"}),
    ("oss-v4-virtual", "oss://my-bucket/prefix/",
     {"endpoint": OSS_ENDPOINT, "signature": "v4", "addressing": "virtual",
      "region": OSS_REGION}),
    ("oss-v4-path-https", "oss://my-bucket/prefix/",
     {"endpoint": "https://" + OSS_ENDPOINT, "signature": "v4", "addressing": "path",
      "region": OSS_REGION}),
    ("oss-v4-derived-region", "oss://my-bucket/prefix/",
     {"endpoint": "oss-cn-beijing-internal.aliyuncs.com", "signature": "v4"}),
    ("s3-custom-path", "s3://my-bucket/p/",
     {"endpoint": "http://127.0.0.1:9000", "region": "us-east-1"}),
    ("s3-aws-virtual", "s3://my-bucket/p/",
     {"endpoint": "https://s3.amazonaws.com", "region": "us-east-1"}),
    ("s3-aws-regional", "s3://my-bucket/p/",
     {"endpoint": "https://s3.us-west-2.amazonaws.com", "region": "us-west-2"}),
]

ENV_VARS = [
    "OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET", "OSS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "OSSC_ENDPOINT", "OSS_ENDPOINT", "AWS_ENDPOINT_URL", "OSSC_REGION", "OSS_REGION",
    "AWS_REGION", "AWS_DEFAULT_REGION", "OSSC_SIGNATURE", "OSSC_ADDRESSING",
    "OSSC_CREDENTIALS_FILE", "OSSC_LOG_LEVEL", "OSSC_LOG_PATH", "AWS_PROFILE",
    "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
]


@pytest.fixture
def env(monkeypatch, tmp_path):
    """Returns set_creds(scheme, token, secret): credentials in the environment, nothing else."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OSSC_CONFIG", "")
    # boto3 must not pick up a profile or config from the machine either.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))

    def set_creds(scheme: str, token: Optional[str], secret: str = SK):
        if scheme == "s3":
            names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
        else:
            names = ("OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET", "OSS_SESSION_TOKEN")
        monkeypatch.setenv(names[0], AK)
        monkeypatch.setenv(names[1], secret)
        if token:
            monkeypatch.setenv(names[2], token)
        else:
            monkeypatch.delenv(names[2], raising=False)

    return set_creds


@pytest.fixture
def pinned_clock(monkeypatch):
    """Pins every clock the SDK signers read to `when` (call it with the time)."""

    def pin(when: int):
        utc = _dt.datetime.fromtimestamp(when, _dt.timezone.utc).replace(tzinfo=None)

        class Frozen(_dt.datetime):
            @classmethod
            def utcnow(cls):
                return utc

            @classmethod
            def now(cls, tz=None):
                return utc.replace(tzinfo=_dt.timezone.utc).astimezone(tz) if tz else utc

        monkeypatch.setattr(oss2.auth, "datetime", Frozen)  # V4: datetime.utcnow()
        monkeypatch.setattr(oss2.utils, "http_date",  # V1: the Date header
                            lambda timeval=None: formatdate(when, usegmt=True))
        monkeypatch.setattr(botocore.auth, "get_current_datetime",
                            lambda *a, **k: utc)

    return pin


# ---------------------------------------------------------------------------------------------
# Helpers


def split_query(query):
    out = []
    for q in query:
        name, eq, value = q.partition("=")
        out.append((name, value))
    return out


def split_headers(headers):
    return dict(h.split(": ", 1) for h in headers)


def scheme_of(url: str) -> str:
    return "s3" if url.startswith("s3://") else "oss"


def table_headers(scheme, headers):
    foreign = "x-amz-" if scheme == "oss" else "x-oss-"
    return [h for h in headers if not h.lower().startswith(foreign)]


def engine_sign(url, settings, method, key, query, headers, when=WHEN):
    client = ossc.Client(url, settings)
    return client.sign(method, key, query=query, headers=headers, when=when)


def oss_endpoint_url(endpoint: str) -> str:
    return oss2.api._normalize_endpoint(endpoint)


def oss2_reference(settings, method, key, query, headers, token, secret=SK):
    """oss2's signed Request for the same request (the SDK's own URL maker and signer)."""
    endpoint = oss_endpoint_url(settings["endpoint"])
    path_style = settings.get("addressing") == "path"
    provider = oss2.credentials.StaticCredentialsProvider(AK, secret, token or "")
    v1 = settings.get("signature") == "v1"
    auth = oss2.ProviderAuth(provider) if v1 else oss2.ProviderAuthV4(provider)
    region = settings.get("region")
    if not v1 and not region:  # oss-cn-beijing-internal.aliyuncs.com -> cn-beijing
        host = urlsplit(endpoint).hostname
        region = host.split(".")[0].removeprefix("oss-").removesuffix("-internal")
    url_maker = oss2.api._UrlMaker(endpoint, False, path_style)
    req = oss2.http.Request(method, url_maker(BUCKET, key or "", slash_safe=True),
                            params=dict(split_query(query)), headers=split_headers(headers),
                            region=region, product="oss")
    auth._sign_request(req, BUCKET, key or "")
    # What oss2 actually puts on the wire by default ('/' in a key escaped as %2F).
    default_url = url_maker(BUCKET, key or "")
    return req, default_url


def botocore_reference(url, settings, method, key, query, headers, token, secret=SK):
    """botocore's S3SigV4Auth over the request the S3 REST serializer would build."""
    endpoint = urlsplit(settings["endpoint"])
    bucket = urlsplit(url).netloc
    # botocore serializes {Key+} with percent_encode(safe='/~').
    path = "/" + (quote(key, safe="/~") if key else "")
    path_style = endpoint.hostname in ("127.0.0.1", "localhost") or \
        settings.get("addressing") == "path"
    if path_style:
        base = f"{endpoint.scheme}://{endpoint.netloc}/{bucket}{path if key else ''}"
    else:
        base = f"{endpoint.scheme}://{bucket}.{endpoint.netloc}{path}"
    creds = botocore.credentials.Credentials(AK, secret, token)
    req = botocore.awsrequest.AWSRequest(method=method, url=base, headers=split_headers(headers),
                                         params=split_query(query))
    req.context["client_config"] = botocore.config.Config(s3={"payload_signing_enabled": False})
    botocore.auth.S3SigV4Auth(creds, "s3", settings["region"]).add_auth(req)
    return req


def assert_no_secret(url, headers, secret=SK):
    assert secret not in url
    assert quote(secret, safe="") not in url
    for name, value in headers.items():
        assert secret not in value, f"{name} leaks the secret"


def assert_same_query(engine_url, expected_pairs):
    got = parse_qsl(urlsplit(engine_url).query, keep_blank_values=True, strict_parsing=False)
    assert sorted(got) == sorted(expected_pairs)


def lower_headers(h):
    return {k.lower(): v for k, v in h.items() if v is not None}


# ---------------------------------------------------------------------------------------------
# Table-driven: engine vs SDK signer


CASES = [
    pytest.param(f, r, tok, id=f"{f[0]}-{r[0]}-{'sts' if tok else 'ak'}")
    for f in FLAVOURS for r in REQUESTS for tok in (None, TOKEN)
]


@pytest.mark.parametrize("flavour,request_,token", CASES)
def test_signature_matches_sdk(env, pinned_clock, flavour, request_, token):
    _, url, settings = flavour
    _, method, key, query, headers = request_
    scheme = scheme_of(url)
    headers = table_headers(scheme, headers)
    env(scheme, token)
    pinned_clock(WHEN)

    e_url, e_headers = engine_sign(url, settings, method, key, query, headers)
    assert_no_secret(e_url, e_headers)
    e_lower = lower_headers(e_headers)

    if scheme == "oss":
        ref, default_url = oss2_reference(settings, method, key, query, headers, token)
        r_headers = lower_headers(ref.headers)
        assert e_headers["Authorization"] == ref.headers["authorization"]
        # Same headers on the wire (oss2 also sends its User-Agent / Accept-Encoding).
        for drop in ("user-agent", "accept-encoding"):
            r_headers.pop(drop, None)
        e_lower.pop("host")
        assert e_lower == r_headers
        if settings.get("signature") == "v1":
            assert e_headers["Date"] == formatdate(WHEN, usegmt=True)
            assert e_headers["Authorization"].startswith(f"OSS {AK}:")
        else:
            assert e_headers["x-oss-date"] == "20231114T221320Z"
            assert e_headers["x-oss-content-sha256"] == "UNSIGNED-PAYLOAD"
            assert "AdditionalHeaders" not in e_headers["Authorization"]
        assert e_headers.get("x-oss-security-token") == token
        # The URL: oss2's (slash-safe) URL exactly; its default one decodes to the same path.
        e_parts, r_parts = urlsplit(e_url), urlsplit(ref.url)
        assert (e_parts.scheme, e_parts.netloc, e_parts.path) == \
            (r_parts.scheme, r_parts.netloc, r_parts.path)
        assert unquote(e_parts.path) == unquote(urlsplit(default_url).path)
        assert e_headers["Host"] == r_parts.netloc
        # What requests would send for oss2 carries the same parameters.
        sent = requests.Request(method, ref.url, params=ref.params).prepare().url
        assert_same_query(e_url, parse_qsl(urlsplit(sent).query, keep_blank_values=True))
        assert_same_query(e_url, split_query(query))
    else:
        ref = botocore_reference(url, settings, method, key, query, headers, token)
        assert e_headers["Authorization"] == ref.headers["Authorization"]
        r_headers = lower_headers(ref.headers)
        e_lower.pop("host")
        assert e_lower == r_headers
        assert e_headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
        assert e_headers.get("x-amz-security-token") == token
        prepared = ref.prepare()
        e_parts, r_parts = urlsplit(e_url), urlsplit(prepared.url)
        assert (e_parts.scheme, e_parts.netloc, e_parts.path) == \
            (r_parts.scheme, r_parts.netloc, r_parts.path)
        assert e_headers["Host"] == botocore.auth._host_from_url(prepared.url)
        assert_same_query(e_url, parse_qsl(r_parts.query, keep_blank_values=True))
        assert_same_query(e_url, split_query(query))


# ---------------------------------------------------------------------------------------------
# End to end: the request each SDK really builds, fed to the engine


class _Captured(Exception):
    def __init__(self, req):
        super().__init__("captured")
        self.req = req


def oss2_capture(settings, token, call):
    """Runs call(bucket) on an oss2.Bucket whose transport raises with the signed request."""
    provider = oss2.credentials.StaticCredentialsProvider(AK, SK, token or "")
    auth = (oss2.ProviderAuth(provider) if settings.get("signature") == "v1"
            else oss2.ProviderAuthV4(provider))
    bucket = oss2.Bucket(auth, settings["endpoint"], BUCKET, region=settings.get("region"),
                         is_path_style=settings.get("addressing") == "path")

    def do_request(req, timeout):
        raise _Captured(req)

    bucket.session.do_request = do_request
    with pytest.raises(_Captured) as info:
        call(bucket)
    return info.value.req


OSS2_CALLS = [
    ("get", "GET", KEYS[2], lambda b: b.get_object(KEYS[2])),
    ("get-range", "GET", KEYS[8],
     lambda b: b.get_object(KEYS[8], byte_range=(0, 99),
                            headers={"x-oss-range-behavior": "standard"})),
    ("head", "HEAD", KEYS[3], lambda b: b.head_object(KEYS[3])),
    ("list", "GET", None, lambda b: b.list_objects_v2(prefix="a b/模型/", max_keys=1000)),
    ("list-cont", "GET", None,
     lambda b: b.list_objects_v2(prefix="a b/", continuation_token=CONT_TOKEN, max_keys=1000)),
    ("put", "PUT", KEYS[2],
     lambda b: b.put_object(KEYS[2], b"body", headers={"Content-MD5": MD5})),
    ("initiate", "POST", KEYS[3], lambda b: b.init_multipart_upload(KEYS[3])),
    ("part", "PUT", KEYS[3], lambda b: b.upload_part(KEYS[3], UPLOAD_ID, 7, b"body")),
    ("complete", "POST", KEYS[3],
     lambda b: b.complete_multipart_upload(KEYS[3], UPLOAD_ID,
                                           [oss2.models.PartInfo(1, '"ABC"')])),
    ("abort", "DELETE", KEYS[3], lambda b: b.abort_multipart_upload(KEYS[3], UPLOAD_ID)),
    ("delete", "DELETE", KEYS[6], lambda b: b.delete_object(KEYS[6])),
    ("copy", "PUT", KEYS[1], lambda b: b.copy_object(BUCKET, KEYS[2], KEYS[1])),
]


@pytest.mark.parametrize("signature", ["v1", "v4"])
@pytest.mark.parametrize("token", [None, TOKEN], ids=["ak", "sts"])
@pytest.mark.parametrize("name,method,key,call", OSS2_CALLS, ids=[c[0] for c in OSS2_CALLS])
def test_oss2_bucket_end_to_end(env, pinned_clock, signature, token, name, method, key, call):
    settings = {"endpoint": OSS_ENDPOINT, "signature": signature, "region": OSS_REGION}
    env("oss", token)
    pinned_clock(WHEN)
    req = oss2_capture(settings, token, call)
    assert req.method == method
    skip = {"user-agent", "accept-encoding", "authorization", "date", "x-oss-date",
            "x-oss-content-sha256", "x-oss-security-token"}
    headers = [f"{k}: {v}" for k, v in req.headers.items()
               if v is not None and k.lower() not in skip]
    query = [f"{k}={v}" for k, v in req.params.items()]
    e_url, e_headers = engine_sign("oss://my-bucket/prefix/", settings, method, key, query,
                                   headers)
    assert e_headers["Authorization"] == req.headers["authorization"]
    e_parts, r_parts = urlsplit(e_url), urlsplit(req.url)
    assert (e_parts.scheme, e_parts.netloc) == (r_parts.scheme, r_parts.netloc)
    assert unquote(e_parts.path) == unquote(r_parts.path)
    assert_same_query(e_url, list(req.params.items()))
    assert_no_secret(e_url, e_headers)


def _text(v):
    return v.decode() if isinstance(v, bytes) else v  # prepared botocore headers are bytes


def boto3_capture(endpoint, region, token, op, **kwargs):
    """The request a default boto3 S3 client sends; endpoint None: AWS's own for the region."""
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name=region, aws_access_key_id=AK,
        aws_secret_access_key=SK, aws_session_token=token,
        config=botocore.config.Config(s3={"payload_signing_enabled": False},
                                      retries={"max_attempts": 0}))

    def before_send(request, **_):
        raise _Captured(request)

    client.meta.events.register("before-send.s3", before_send)
    with pytest.raises(_Captured) as info:
        getattr(client, op)(**kwargs)
    return info.value.req


BOTO3_CALLS = [
    ("get", "GET", KEYS[2], [], "get_object", {"Key": KEYS[2]}),
    ("get-range", "GET", KEYS[8], [], "get_object", {"Key": KEYS[8], "Range": "bytes=0-99"}),
    ("head", "HEAD", KEYS[5], [], "head_object", {"Key": KEYS[5]}),
    ("list", "GET", None, LIST_QUERY, "list_objects_v2",
     {"Prefix": "a b/模型/", "MaxKeys": 1000, "EncodingType": "url"}),
    ("list-cont", "GET", None, LIST_QUERY + [f"continuation-token={CONT_TOKEN}"],
     "list_objects_v2", {"Prefix": "a b/模型/", "MaxKeys": 1000, "EncodingType": "url",
                         "ContinuationToken": CONT_TOKEN}),
    ("initiate", "POST", KEYS[3], ["uploads"], "create_multipart_upload", {"Key": KEYS[3]}),
    ("abort", "DELETE", KEYS[3], [f"uploadId={UPLOAD_ID}"], "abort_multipart_upload",
     {"Key": KEYS[3], "UploadId": UPLOAD_ID}),
    ("delete", "DELETE", KEYS[6], [], "delete_object", {"Key": KEYS[6]}),
    ("copy", "PUT", KEYS[1], [], "copy_object",
     {"Key": KEYS[1], "CopySource": {"Bucket": BUCKET, "Key": KEYS[2]}}),
]


@pytest.mark.parametrize("endpoint,region,sdk_endpoint", [
    ("http://127.0.0.1:9000", "us-east-1", "http://127.0.0.1:9000"),
    ("https://s3.amazonaws.com", "us-east-1", None),
    ("https://s3.eu-central-1.amazonaws.com", "eu-central-1", None),
], ids=["custom", "aws-us-east-1", "aws-eu-central-1"])
@pytest.mark.parametrize("token", [None, TOKEN], ids=["ak", "sts"])
@pytest.mark.parametrize("name,method,key,query,op,kwargs", BOTO3_CALLS,
                         ids=[c[0] for c in BOTO3_CALLS])
def test_boto3_client_end_to_end(env, pinned_clock, endpoint, region, sdk_endpoint, token, name,
                                 method, key, query, op, kwargs):
    env("s3", token)
    pinned_clock(WHEN)
    req = boto3_capture(sdk_endpoint, region, token, op, Bucket=BUCKET, **kwargs)
    settings = {"endpoint": endpoint, "region": region}
    # The engine gets the request as boto3 built it: its query, and the headers botocore signs
    # (all but User-Agent, the retry headers and Content-Length botocore adds after signing,
    # and those the signer itself adds).
    skip = {"user-agent", "amz-sdk-invocation-id", "amz-sdk-request", "authorization",
            "x-amz-date", "x-amz-content-sha256", "x-amz-security-token", "content-length"}
    headers = [f"{k}: {_text(v)}" for k, v in req.headers.items() if k.lower() not in skip]
    b_query = parse_qsl(urlsplit(req.url).query, keep_blank_values=True)
    assert sorted(b_query) == sorted(split_query(query))  # the table is what boto3 sends
    e_url, e_headers = engine_sign("s3://my-bucket/p/", settings, method, key,
                                   [f"{k}={v}" for k, v in b_query], headers)
    b_parts, e_parts = urlsplit(req.url), urlsplit(e_url)
    assert (e_parts.scheme, e_parts.netloc, e_parts.path) == \
        (b_parts.scheme, b_parts.netloc, b_parts.path)
    assert_same_query(e_url, b_query)
    assert e_headers["Authorization"] == _text(req.headers["Authorization"])
    assert_no_secret(e_url, e_headers)


# ---------------------------------------------------------------------------------------------
# The comparisons can fail, and the signature depends on what it must depend on


SANITY = [
    pytest.param(FLAVOURS[0], id="oss-v1"),
    pytest.param(FLAVOURS[2], id="oss-v4"),
    pytest.param(FLAVOURS[5], id="s3"),
]


def _reference_auth(url, settings, method, key, query, headers, token, secret=SK):
    if scheme_of(url) == "oss":
        req, _ = oss2_reference(settings, method, key, query, headers, token, secret)
        return req.headers["authorization"]
    return botocore_reference(url, settings, method, key, query, headers, token,
                              secret).headers["Authorization"]


@pytest.mark.parametrize("flavour", SANITY)
def test_harness_detects_a_wrong_secret_time_or_request(env, pinned_clock, flavour):
    _, url, settings = flavour
    scheme = scheme_of(url)
    key, headers = KEYS[1], table_headers(scheme, ["Range: bytes=0-99"])
    env(scheme, TOKEN, secret=SK + "x")  # the engine signs with another secret
    pinned_clock(WHEN)
    _, e_headers = engine_sign(url, settings, "GET", key, [], headers)
    assert e_headers["Authorization"] != _reference_auth(url, settings, "GET", key, [], headers,
                                                         TOKEN)
    assert e_headers["Authorization"] == _reference_auth(url, settings, "GET", key, [], headers,
                                                         TOKEN, secret=SK + "x")

    env(scheme, TOKEN)
    good = _reference_auth(url, settings, "GET", key, [], headers, TOKEN)
    _, e_headers = engine_sign(url, settings, "GET", key, [], headers)
    assert e_headers["Authorization"] == good
    # One second later, another key, another method, another token: other signatures.
    assert engine_sign(url, settings, "GET", key, [], headers, when=WHEN + 1)[1][
        "Authorization"] != good
    assert engine_sign(url, settings, "GET", key + "x", [], headers)[1]["Authorization"] != good
    assert engine_sign(url, settings, "HEAD", key, [], headers)[1]["Authorization"] != good
    env(scheme, TOKEN + "y")
    assert engine_sign(url, settings, "GET", key, [], headers)[1]["Authorization"] != good


@pytest.mark.parametrize("flavour", SANITY)
@pytest.mark.parametrize("when", [0, 951782400, 1709251199, 1709251200, 4102444799])
def test_signature_at_other_times(env, pinned_clock, flavour, when):
    """Date formatting across day, month and leap-year boundaries."""
    _, url, settings = flavour
    scheme = scheme_of(url)
    env(scheme, None)
    pinned_clock(when)
    query = ["list-type=2", "prefix=x", "continuation-token=t"]
    _, e_headers = engine_sign(url, settings, "GET", None, query, [], when=when)
    assert e_headers["Authorization"] == _reference_auth(url, settings, "GET", None, query, [],
                                                         None)


def test_region_is_part_of_the_v4_signature(env, pinned_clock):
    env("oss", None)
    pinned_clock(WHEN)
    base = {"endpoint": OSS_ENDPOINT, "signature": "v4"}
    _, derived = engine_sign("oss://my-bucket/", base, "GET", "k", [], [])
    _, explicit = engine_sign("oss://my-bucket/", dict(base, region="cn-shanghai"), "GET", "k",
                              [], [])
    assert "/cn-hangzhou/oss/aliyun_v4_request" in derived["Authorization"]
    assert "/cn-shanghai/oss/aliyun_v4_request" in explicit["Authorization"]
    assert explicit["Authorization"] == _reference_auth(
        "oss://my-bucket/", dict(base, region="cn-shanghai"), "GET", "k", [], [], None)


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:80", "https://s3.amazonaws.com:443",
                                      "http://oss-cn-hangzhou.aliyuncs.com:80"])
@pytest.mark.parametrize("key", [KEYS[0], None])
def test_default_port_is_not_signed(env, pinned_clock, endpoint, key):
    """curl (like every HTTP client) leaves a default port out of the Host header it sends, so
    the signed host must leave it out too, as botocore's does."""
    env("s3", None)
    pinned_clock(WHEN)
    settings = {"endpoint": endpoint, "region": "us-east-1"}
    query = [] if key else ["list-type=2", "prefix=p/"]
    e_url, e_headers = engine_sign("s3://my-bucket/p/", settings, "GET", key, query, [])
    assert ":80" not in e_headers["Host"] and ":443" not in e_headers["Host"]
    ref = botocore_reference("s3://my-bucket/p/", settings, "GET", key, query, [], None)
    assert e_headers["Host"] == botocore.auth._host_from_url(ref.url)
    assert e_headers["Authorization"] == ref.headers["Authorization"]
    assert unquote(urlsplit(e_url).path) == unquote(urlsplit(ref.url).path)
