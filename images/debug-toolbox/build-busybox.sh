#!/bin/sh
# build-busybox.sh SOURCE_DIR CONFIG ROOTFS APPLET...
#
# Builds a static busybox from SOURCE_DIR (Debian's source package) with the settings in
# CONFIG and installs it as ROOTFS/bin/busybox with one link per APPLET, and its copyright
# file where Debian puts it.
#
# busybox's `make allnoconfig` ignores KCONFIG_ALLCONFIG (a second pass resets everything to
# "no"), so CONFIG's lines replace their symbols' lines in an all-no .config and
# `make oldconfig` settles what depends on them. Two checks keep the binary honest: a
# setting oldconfig dropped (its dependency is off) fails the build, and so does any
# difference between the applets built and the APPLETs asked for.
set -eu

source_dir=$1
config=$(realpath "$2")
rootfs=$3
shift 3

cd "$source_dir"
make -s allnoconfig >/dev/null
awk -F '[ =]' 'NR == FNR { if ($1 ~ /^CONFIG_/) wanted[$1] = 1; next }
               !(($1 in wanted) || ($1 == "#" && ($2 in wanted)))' "$config" .config >.config.merged
grep '^CONFIG_' "$config" >>.config.merged
mv .config.merged .config
yes '' | make -s oldconfig >/dev/null

dropped=$(grep '^CONFIG_' "$config" | grep -v -x -F -f .config || true)
if [ -n "$dropped" ]; then
  printf 'build-busybox: %s: these settings need an option that is off:\n%s\n' "$config" "$dropped" >&2
  exit 1
fi

make -s -j"$(nproc)" busybox
built=$(./busybox --list | sort | tr '\n' ' ')
wanted=$(printf '%s\n' "$@" | sort | tr '\n' ' ')
if [ "$built" != "$wanted" ]; then
  printf 'build-busybox: busybox has the applets [%s] but the Dockerfile asks for [%s]; change %s or the list\n' \
    "$built" "$wanted" "$config" >&2
  exit 1
fi

install -D -m 0755 busybox "$rootfs/bin/busybox"
install -D -m 0644 debian/copyright "$rootfs/usr/share/doc/busybox/copyright"
for applet in "$@"; do
  ln -s busybox "$rootfs/bin/$applet"
done
