#!/bin/bash
# A path-style S3 stand-in: nginx serving $ROOT/<bucket>/<key> (Range, HEAD; the Authorization
# header is ignored, so signed requests pass) and, for GET /<bucket>?list-type=2&prefix=P, a static
# ListObjectsV2 XML generated here for each top-level prefix P of the bucket, each directory
# below it and each key.
# usage: nginx_s3_store.sh NGINX_BIN ROOT BUCKET PORT WORKERS
set -eu
NGINX=$1 ROOT=$2 BUCKET=$3 PORT=$4 WORKERS=${5:-8}
W=${NGINX_STORE_DIR:-/tmp/ossc-nginx-store}; mkdir -p $W/tmp $ROOT/__list
NGINX_STORE_DIR=$W python3 - "$ROOT" "$BUCKET" <<'EOF'
import os, sys, time
from urllib.parse import quote
root, bucket = sys.argv[1], sys.argv[2]
bdir = os.path.join(root, bucket)
maps = []


def pattern(rest):  # a key below the prefix as a regex on the raw query value
    return rest.replace(".", "\\.").replace("/", "(%2F|/)")


def parents(d, pfx):  # d's ancestors below pfx
    while (d := os.path.dirname(d)) not in ("", pfx):
        yield d


for pfx in sorted(os.listdir(bdir)):
    pdir = os.path.join(bdir, pfx)
    if not os.path.isdir(pdir):
        continue
    keys = []
    for dp, _, fns in os.walk(pdir):
        for fn in fns:
            p = os.path.join(dp, fn)
            keys.append((os.path.relpath(p, bdir), os.stat(p)))
    keys.sort()
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
           f'<Name>{bucket}</Name><Prefix>{pfx}/</Prefix><KeyCount>{len(keys)}</KeyCount>'
           '<MaxKeys>1000</MaxKeys><EncodingType>url</EncodingType><IsTruncated>false</IsTruncated>']
    for k, st in keys:
        lm = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(st.st_mtime))
        etag = '&quot;%x-%x&quot;' % (int(st.st_mtime), st.st_size)  # nginx's own ETag form
        out.append(f'<Contents><Key>{quote(k, safe="/")}</Key><LastModified>{lm}</LastModified>'
                   f'<ETag>{etag}</ETag><Size>{st.st_size}</Size><StorageClass>STANDARD</StorageClass></Contents>')
    out.append('</ListBucketResult>')
    with open(os.path.join(root, "__list", pfx + ".xml"), "w") as f:
        f.write("\n".join(out) + "\n")
    maps.append(f'    "~^{pfx}(%2F|/)?$" {pfx};')
    print(f"listing {bucket}/{pfx}/: {len(keys)} keys, {sum(s.st_size for _, s in keys)} bytes")
    # narrower listings: each key's own prefix and its stem before '-of-' (for per-file gets)
    for k, st in keys:
        for sub in {k, k.split("-of-")[0]}:
            name = sub.replace("/", "__")
            hdr = out[:2] + [out[2].replace(f"<Prefix>{pfx}/</Prefix>", f"<Prefix>{sub}</Prefix>")
                             .replace(f"<KeyCount>{len(keys)}</KeyCount>", "<KeyCount>1</KeyCount>")]
            line = [x for x in out if f"<Key>{quote(k, safe='/')}</Key>" in x]
            with open(os.path.join(root, "__list", name + ".xml"), "w") as f:
                f.write("\n".join(hdr + line + ['</ListBucketResult>']) + "\n")
            maps.append(f'    "~^{pfx}(%2F|/){pattern(sub[len(pfx) + 1:])}$" {name};')
    # and each directory below the prefix (s5cmd's 's3://B/P/dir/*' lists P/dir/)
    dirs = {os.path.dirname(k) for k, _ in keys} - {pfx}
    dirs |= {p for d in dirs for p in parents(d, pfx)}
    for d in sorted(dirs):
        inside = [x for x in out if x.startswith("<Contents><Key>" + quote(d, safe="/") + "/")]
        hdr = out[:2] + [out[2].replace(f"<Prefix>{pfx}/</Prefix>", f"<Prefix>{d}/</Prefix>")
                         .replace(f"<KeyCount>{len(keys)}</KeyCount>", f"<KeyCount>{len(inside)}</KeyCount>")]
        name = d.replace("/", "__") + "__dir"
        with open(os.path.join(root, "__list", name + ".xml"), "w") as f:
            f.write("\n".join(hdr + inside + ['</ListBucketResult>']) + "\n")
        maps.append(f'    "~^{pfx}(%2F|/){pattern(d[len(pfx) + 1:])}(%2F|/)?$" {name};')
with open(os.environ.get("NGINX_STORE_DIR", "/tmp/ossc-nginx-store") + "/listmap.conf", "w") as f:
    f.write("map $arg_prefix $listpage {\n    default __none;\n" + "\n".join(maps) + "\n}\n")
EOF
cat > $W/nginx.conf <<CONF
worker_processes $WORKERS;
pid $W/nginx.pid;
error_log $W/error.log warn;
events { worker_connections 4096; }
http {
  access_log $W/access.log combined;
  sendfile on; tcp_nopush on; keepalive_requests 100000; keepalive_timeout 120s;
  types { } default_type application/octet-stream;
  client_body_temp_path $W/tmp; proxy_temp_path $W/tmp; fastcgi_temp_path $W/tmp;
  uwsgi_temp_path $W/tmp; scgi_temp_path $W/tmp;
  include $W/listmap.conf;
  server {
    listen 127.0.0.1:$PORT;
    root $ROOT;
    location = /$BUCKET  { default_type application/xml; rewrite ^ /__list/\$listpage.xml break; }
    location = /$BUCKET/ { default_type application/xml; rewrite ^ /__list/\$listpage.xml break; }
    location / { }
  }
}
CONF
$NGINX -c $W/nginx.conf -p $W/ -e $W/error.log
for i in $(seq 50); do [ -s $W/nginx.pid ] && break; sleep 0.05; done
echo "nginx master $(cat $W/nginx.pid), $WORKERS workers on 127.0.0.1:$PORT, root $ROOT"
