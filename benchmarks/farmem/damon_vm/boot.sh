#!/bin/bash
# Boot a throw-away VM whose kernel has DAMON virtual-address monitoring (Debian bookworm's
# linux-image-6.12: CONFIG_DAMON_VADDR=y) and run check.py in it: the host's kernel here
# (6.18, fc) has no DAMON_VADDR and its DAMON sysfs is held by the machine's own monitor,
# so the pager's DAMON source cannot be exercised on the host itself.
#
# The VM's root is the host's / shared read-only over 9p (the project, its venv and the
# C compiler as they are), /tmp and /run are tmpfs in the VM; nothing of the host changes
# but WORK (this script's scratch directory).  KVM here fails in the kernel decompressor
# (nested: "KVM internal error ... emulation failure"), so the VM runs under TCG: every
# figure from it is for behaviour (which pages stay), never for speed.  AVX is hidden from the
# guest: QEMU 7.2's TCG AVX2 (new in 7.2) crashed numpy in the pager (a masked load, SIGSEGV).
#
#   benchmarks/farmem/damon_vm/boot.sh [WORK]       (needs qemu-system-x86, ~110 MB download)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${1:-/tmp/damonvm}
KVER=6.12.117+deb12-amd64
mkdir -p "$WORK/out" "$WORK/ird/bin" "$WORK/ird/mod" "$WORK/ird/proc" "$WORK/ird/sys" "$WORK/ird/dev" "$WORK/ird/newroot"
cd "$WORK"
[ -f k/boot/vmlinuz-$KVER ] || { apt-get download linux-image-$KVER busybox-static; dpkg -x linux-image-$KVER*.deb k; dpkg -x busybox-static*.deb bb; }
cp bb/bin/busybox ird/bin/
for m in fs/netfs/netfs net/9p/9pnet net/9p/9pnet_virtio fs/9p/9p; do
    xz -dc k/lib/modules/$KVER/kernel/$m.ko.xz > ird/mod/$(basename $m).ko
done
cp "$HERE/init" ird/init; chmod +x ird/init
(cd ird && find . | ../bb/bin/busybox cpio -o -H newc 2>/dev/null | gzip -1 > ../initrd.gz)
cp "$HERE/run.sh" "$HERE/check.py" out/
echo 'cd /tmp && timeout 1300 /work/main/.venv/bin/python /tmp/vmwork/check.py 2>&1' > out/cmd.sh
timeout 1500 nice qemu-system-x86_64 -accel tcg,thread=multi -cpu max,-avx,-avx2,-avx512f -m 3G -smp 2 \
    -kernel k/boot/vmlinuz-$KVER -initrd initrd.gz -append "console=ttyS0 rdinit=/init panic=-1" \
    -nographic -no-reboot \
    -virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap \
    -virtfs local,path="$WORK/out",mount_tag=outdir,security_model=passthrough > console.log 2>&1
cat out/log.txt
