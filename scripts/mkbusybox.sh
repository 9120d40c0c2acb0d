#!/usr/bin/env bash
# Builds a busybox root filesystem tarball from Debian's busybox-static, offline and reproducibly
# (sorted names, fixed times, numeric root ownership), so the image id is the same on every machine.
set -euo pipefail
out=${1:?usage: mkbusybox.sh OUT.tar}
bb=/bin/busybox
[ -x "$bb" ] || { echo "mkbusybox: $bb missing: apt-get install busybox-static" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
r=$tmp/rootfs
mkdir -p "$r"/{bin,etc,proc,sys,dev,tmp,root,var,home,usr/bin,usr/sbin,var/tmp}
ln -s bin "$r/sbin"
cp "$bb" "$r/bin/busybox"
for applet in $("$bb" --list); do
  # The list names busybox itself; linking it would replace the binary with a loop.
  [ "$applet" = busybox ] && continue
  [ -e "$r/bin/$applet" ] || ln -s busybox "$r/bin/$applet"
done
chmod 1777 "$r/tmp" "$r/var/tmp"
chmod 700 "$r/root"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' >"$r/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
# Mount targets for the files the engine bind-mounts per container.
: >"$r/etc/hosts"; : >"$r/etc/hostname"; : >"$r/etc/resolv.conf"
mkdir -p "$(dirname "$out")"
tar --sort=name --mtime='2024-01-01 00:00:00Z' --owner=0 --group=0 --numeric-owner \
  -C "$r" -cf "$out.tmp" .
mv "$out.tmp" "$out"
