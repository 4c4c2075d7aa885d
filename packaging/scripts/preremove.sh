#!/bin/sh
# Before the files go (remove, upgrade): bytecode that a python3 run by hand left beside the
# package's modules (ossc-run and ossc write none).
set -e
rm -rf /usr/local/lib/ossc/python/ossc/__pycache__
