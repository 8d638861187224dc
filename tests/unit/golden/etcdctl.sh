#!/bin/sh
# Managed by etcd-deploy (cluster prod): changes are overwritten by the next run.
set -a
. /etc/etcd/etcdctl.env
set +a
exec /opt/bin/etcdctl "$@"
