#!/bin/sh
# build-guest.sh [OUT]: builds vmfs's test guest into OUT (default build/guest), usable as
# `vmfs --os-dir OUT`:
#   vmlinuz              Debian 12's newest linux-image-6.1.0-<N>-amd64 (pinned in kernel.pkg)
#   initramfs.cpio.gz    /init = vmfs-guest (static Go) + the .ko files it loads + modules.dep
#   microdroid.json      VM config (kernel, initrd, params, memory_mib; disks [] as vmfs
#                        appends the payload disk)
# The .deb and its extraction are cached under OUT; a second run only rebuilds the agent and
# repacks the initramfs when the agent changed. Needs apt-get + dpkg (first run only), depmod
# and modprobe (kmod), cpio, gzip and go. Set VMFS_GUEST_KERNEL=linux-image-... to pick a kernel.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-$repo/build/guest}
GO=${GO:-go}
# Modules the agent needs (formats.md 7.3: virtio disk, loop for the hash device, dm-verity);
# their dependencies come from modules.dep.
modules="virtio_pci virtio_blk loop dm-mod dm-bufio dm-verity"
params="console=ttyS0 panic=-1 quiet"

die() { echo "build-guest: $*" >&2; exit 1; }
for t in dpkg depmod modprobe cpio gzip "$GO"; do
	command -v "$t" >/dev/null 2>&1 || die "$t not found (apt-get install dpkg kmod cpio gzip, and Go)"
done
mkdir -p "$out"
out=$(cd "$out" && pwd)

# The kernel package is chosen once and pinned, so later runs do not depend on apt's lists.
if [ -s "$out/kernel.pkg" ]; then
	pkg=$(cat "$out/kernel.pkg")
elif [ -n "${VMFS_GUEST_KERNEL:-}" ]; then
	pkg=$VMFS_GUEST_KERNEL
else
	newest() { apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | cut -d' ' -f1 | sort -V | tail -n1; }
	pkg=$(newest)
	# A fresh machine (or container) may have no package lists yet.
	if [ -z "$pkg" ] && [ "$(id -u)" -eq 0 ]; then
		apt-get update -qq && pkg=$(newest)
	fi
	[ -n "$pkg" ] || die "no linux-image-6.1.0-<N>-amd64 in apt's lists (run apt-get update)"
fi
kver=${pkg#linux-image-}
root=$out/kernel/$kver
if [ ! -f "$root/boot/vmlinuz-$kver" ]; then
	mkdir -p "$out/deb"
	deb=$(ls "$out/deb/${pkg}"_*.deb 2>/dev/null | head -n1 || true)
	if [ -z "$deb" ]; then
		# As root apt would hand the download to user _apt, who cannot write here.
		sandbox=""
		[ "$(id -u)" -ne 0 ] || sandbox="-o APT::Sandbox::User=root"
		(cd "$out/deb" && apt-get download -q $sandbox "$pkg") || die "apt-get download $pkg failed"
		deb=$(ls "$out/deb/${pkg}"_*.deb | head -n1)
	fi
	rm -rf "$root.tmp"
	mkdir -p "$out/kernel"
	dpkg -x "$deb" "$root.tmp"
	# The .deb carries no modules.dep: postinst runs depmod on a real install.
	depmod -b "$root.tmp" "$kver"
	mv "$root.tmp" "$root"
fi
echo "$pkg" >"$out/kernel.pkg"
cmp -s "$root/boot/vmlinuz-$kver" "$out/vmlinuz" || cp "$root/boot/vmlinuz-$kver" "$out/vmlinuz"

# The agent: a static binary, reproducible so an unchanged agent leaves the initramfs alone.
(cd "$repo" && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 "$GO" build -trimpath -ldflags='-s -w' \
	-o "$out/init.new" ./cmd/vmfs-guest)

# Module files in load order (dependencies first), relative to lib/modules/$kver.
mdir=$root/lib/modules/$kver
kos=$(for m in $modules; do modprobe -d "$root" -S "$kver" --show-depends "$m"; done |
	awk '$1 == "insmod" { print $2 }' | awk '!seen[$0]++' | sed "s|^$mdir/||")
[ -n "$kos" ] || die "no modules found for: $modules"
stamp=$(printf '%s\n%s\n' "$kver" "$kos")

if [ -f "$out/initramfs.cpio.gz" ] && [ -f "$out/init" ] && cmp -s "$out/init.new" "$out/init" &&
	[ "$(cat "$out/initramfs.stamp" 2>/dev/null)" = "$stamp" ]; then
	rm -f "$out/init.new"
else
	stage=$out/initramfs.d
	rm -rf "$stage"
	mkdir -p "$stage/proc" "$stage/sys" "$stage/dev" "$stage/lib/modules/$kver"
	cp "$out/init.new" "$stage/init"
	chmod 0755 "$stage/init"
	for ko in $kos; do
		mkdir -p "$stage/lib/modules/$kver/$(dirname "$ko")"
		cp "$mdir/$ko" "$stage/lib/modules/$kver/$ko"
		awk -v k="$ko:" '$1 == k' "$mdir/modules.dep" >>"$stage/lib/modules/$kver/modules.dep"
	done
	find "$stage" -exec touch -h -d @0 {} +
	(cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc --reproducible -R 0:0 --quiet) |
		gzip -n >"$out/initramfs.cpio.gz.tmp"
	mv "$out/initramfs.cpio.gz.tmp" "$out/initramfs.cpio.gz"
	mv "$out/init.new" "$out/init"
	printf '%s' "$stamp" >"$out/initramfs.stamp"
	rm -rf "$stage"
fi

# The VM config; its paths are relative to --os-dir, so that the directory may be moved or copied.
cat >"$out/microdroid.json.tmp" <<EOF
{
  "kernel": "vmlinuz",
  "initrd": "initramfs.cpio.gz",
  "params": "$params",
  "memory_mib": 256,
  "disks": []
}
EOF
if cmp -s "$out/microdroid.json.tmp" "$out/microdroid.json"; then
	rm "$out/microdroid.json.tmp"
else
	mv "$out/microdroid.json.tmp" "$out/microdroid.json"
fi
