#!/bin/bash
# runs inside the VM (kernel 6.12 with DAMON vaddr), root = the host's / read-only
mount -t tmpfs tmpfs /dev/shm 2>/dev/null
echo "VM: $(uname -r) damon: $(cat /sys/kernel/mm/damon/admin/kdamonds/nr_kdamonds)"
mkdir -p /tmp/home; export HOME=/tmp/home PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
cd /work/wt/damon
export PYTHONPATH=/work/wt/damon PYTHONDONTWRITEBYTECODE=1
if [ -f /tmp/vmwork/cmd.sh ]; then bash /tmp/vmwork/cmd.sh > /tmp/vmwork/log.txt 2>&1; fi
echo "VM: done rc=$?"
sync
echo 1 > /proc/sys/kernel/sysrq; echo o > /proc/sysrq-trigger
sleep 5
