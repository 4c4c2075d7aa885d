#!/bin/sh
# purge: dpkg has removed the conffile; the logs and the emptied directories go too.
set -e
if [ "$1" = purge ]; then
    rm -rf /var/log/oss-connector
    rmdir /etc/oss-connector 2>/dev/null || true
fi
