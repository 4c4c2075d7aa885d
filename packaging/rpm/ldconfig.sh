#!/bin/sh
# After the libraries in /usr/local/lib come or go (ossc-owner finds libossc.so by its RPATH).
/sbin/ldconfig || true
