#!/bin/sh
# collect-rootfs.sh ROOTFS PROGRAM...
#
# Copies each PROGRAM, the shared libraries it loads and the copyright files of the Debian
# packages they come from into ROOTFS, for a FROM scratch stage.
#
# ldd lists everything the dynamic loader maps, the loader included. These programs load
# nothing else at run time: glibc 2.36 has the files and dns name services built in, and
# OpenSSL finds its default provider without a configuration file. Every file lands at the
# path ldd names, dereferenced, so the image needs none of Debian's symlinks. A library ldd
# cannot find, or a file no package ships, fails the build.
set -eu

rootfs=$1
shift

copy() {
  mkdir -p "$rootfs$(dirname "$1")"
  cp -L "$1" "$rootfs$1"
}

# The package shipping $1. With merged /usr, ldd's /lib/... is dpkg's /usr/lib/... and the
# reverse, so try both names.
package_of() {
  for path in "$1" "/usr$1" "${1#/usr}"; do
    if found=$(dpkg-query -S "$path" 2>/dev/null); then
      printf '%s\n' "$found" | head -n 1 | cut -d: -f1
      return 0
    fi
  done
  echo "collect-rootfs: no Debian package ships $1" >&2
  return 1
}

files=$(mktemp)
for program in "$@"; do
  printf '%s\n' "$program" >>"$files"
  needed=$(ldd "$program")
  if printf '%s\n' "$needed" | grep -q 'not found'; then
    printf 'collect-rootfs: %s needs libraries that are not installed:\n%s\n' "$program" "$needed" >&2
    exit 1
  fi
  printf '%s\n' "$needed" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' >>"$files"
done

sort -u "$files" | while read -r file; do
  copy "$file"
  package=$(package_of "$file")
  copy "/usr/share/doc/$package/copyright"
done
rm -f "$files"
