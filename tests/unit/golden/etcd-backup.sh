#!/bin/sh
# Managed by etcd-deploy (cluster prod): changes are overwritten by the next run.
# Snapshot of etcd member etcd-1 into /var/backups/etcd, keeping the newest 7.
# Prints the new file's path; etcdctl's own output goes to stderr.
set -eu
umask 077
export LC_ALL=C
dir=/var/backups/etcd
keep=7
# Unquoted on purpose below: the path has no blanks, the rest is a glob.
pattern=/var/backups/etcd/prod-etcd-1-[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9].*Z.db
mkdir -p "$dir"
chmod 0700 "$dir"
# etcdctl writes NAME.part.part and renames it NAME.part, which we rename NAME.
rm -f $pattern.part $pattern.part.part  # left by a killed run
f="/var/backups/etcd/prod-etcd-1-$(date -u +%Y%m%dT%H%M%S.%NZ).db"
trap 'rm -f "$f.part" "$f.part.part"' EXIT
trap 'exit 1' HUP INT TERM
/opt/bin/etcdctl.sh snapshot save "$f.part" >&2
if [ ! -s "$f.part" ]; then
	echo "etcd-backup: etcdctl wrote no snapshot to $f.part" >&2
	exit 1
fi
mv "$f.part" "$f"
set -- $pattern  # oldest first
[ -e "$1" ] || set --
while [ "$#" -gt "$keep" ]; do
	rm -f -- "$1"
	shift
done
echo "$f"
