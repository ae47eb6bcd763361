#!/usr/bin/env bash
# Set-up of the BCC degraded mode (hosts without BTF), called by `make setup`.
#
# BCC compiles its probes at run time against kernel headers. It needs
# python3-bpfcc and either /lib/modules/$(uname -r)/build (+ source) or one
# merged header tree passed as BCC_KERNEL_SOURCE. A custom kernel has no Debian
# headers package, so this unpacks Debian's linux-headers-<ver>-amd64 and
# linux-headers-<ver>-common of the newest series apt offers into one tree under
# $SLOCAP_BCC_CACHE and points $SLOCAP_BCC_CACHE/current at it; capture/bcc.py
# passes that to BCC. /lib/modules is never touched.
#
# The header packages are unpacked, not installed: installing them would pull
# in their kernel image (6.12) or gcc and kbuild, none of which BCC needs.
#
# Idempotent: installs only what is missing, builds the tree once.
# Prints the tree BCC will use on its last line.
set -euo pipefail

CACHE=${SLOCAP_BCC_CACHE:-/var/cache/slocap/bcc-headers}
# header meta packages, most preferred first: 6.12 (bookworm-security) is the
# series closest to recent kernels, 6.1 (bookworm) the fallback
META=${SLOCAP_BCC_HEADERS:-"linux-headers-6.12-amd64 linux-headers-amd64"}
PYTHON=/usr/bin/python3
RELEASE=$(uname -r)

log() { echo "bcc-setup: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (installs packages, writes $CACHE)"

updated=no
apt_update() {
	if [ "$updated" = no ]; then
		apt-get update -qq
		updated=yes
	fi
}

# 1. BCC itself
if ! dpkg -s python3-bpfcc >/dev/null 2>&1; then
	log "installing python3-bpfcc"
	apt_update
	out=$(DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-bpfcc 2>&1) ||
		die "apt-get install python3-bpfcc failed: $out"
fi

# BCC finds the running kernel's own headers without help
for dir in "/lib/modules/$RELEASE/build" "/lib/modules/$RELEASE/source"; do
	if [ -f "$dir/include/linux/kconfig.h" ]; then
		log "kernel $RELEASE has its own headers"
		echo "/lib/modules/$RELEASE/build"
		exit 0
	fi
done

# 2. a merged header tree, once
if [ -f "$CACHE/current/.complete" ]; then
	echo "$(readlink -f "$CACHE/current")"
	exit 0
fi

# the versioned package a meta package stands for, e.g. linux-headers-6.12.117+deb12-amd64
resolve() {
	apt-cache depends "$1" 2>/dev/null |
		awk '$1 == "Depends:" && $2 ~ /^linux-headers-.*-amd64$/ { print $2; exit }'
}
pkg=""
for meta in $META; do
	pkg=$(resolve "$meta")
	if [ -z "$pkg" ]; then
		apt_update
		pkg=$(resolve "$meta")
	fi
	[ -n "$pkg" ] && break
done
[ -n "$pkg" ] || die "apt offers none of: $META; set SLOCAP_BCC_HEADERS to a linux-headers meta package"
common=$(apt-cache depends "$pkg" | awk '$1 == "Depends:" && $2 ~ /^linux-headers-.*-common$/ { print $2; exit }')
[ -n "$common" ] || die "cannot find the -common package $pkg depends on"
name=${pkg#linux-headers-}
log "building a header tree for kernel $RELEASE from $pkg + $common"

mkdir -p "$CACHE"
work=$(mktemp -d "$CACHE/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
# apt drops privileges to _apt for downloads
if id _apt >/dev/null 2>&1; then chown _apt "$work"; fi
(cd "$work" && apt-get download -qq "$pkg" "$common")
for deb in "$work"/*.deb; do
	dpkg-deb -x "$deb" "$work/root"
done
# the -amd64 part (config, generated headers) over the -common part; keep
# common's Makefile, drop the links to kbuild (not unpacked) and the BTF vmlinux
tree="$work/tree"
mv "$work/root/usr/src/$common" "$tree"
tar -C "$work/root/usr/src/$pkg" -c --exclude=./Makefile --exclude=./scripts \
	--exclude=./tools --exclude=./vmlinux . | tar -C "$tree" -x
rm -f "$tree/scripts" "$tree/tools"

# 3. proof that BCC compiles against it
BCC_KERNEL_SOURCE=$tree "$PYTHON" -c '
from bcc import BPF
BPF(text="int probe(void *ctx) { return 0; }", cflags=["-Wno-ignored-attributes"])
' || die "BCC cannot compile against $tree"
touch "$tree/.complete"

rm -rf "${CACHE:?}/$name"
mv "$tree" "$CACHE/$name"
ln -sfn "$name" "$CACHE/.current"
mv -T "$CACHE/.current" "$CACHE/current"
log "kernel headers for BCC in $CACHE/$name"
echo "$CACHE/$name"
