# Sourced by tests/citus/cluster.sh and benches/citus.sh: a Citus 13.2.2
# cluster on PG 15 (a coordinator and 2 workers, as the postgres OS user on
# private ports), with pg_tenantguard on every node.
#   citus_start PORT    start (coordinator PORT, workers PORT+1, PORT+2); sets
#                       CPORT W1 W2 CDIR W1DIR W2DIR and the coord/w1/w2 helpers
#   citus_stop          stop the three
citus_start() {
  bash tests/lib/install_citus.sh || { echo "not ok - Citus builds and installs"; return 1; }
  CPORT=$1; W1=$((CPORT + 1)); W2=$((CPORT + 2))
  local conf=$'shared_preload_libraries = \'citus,pg_tenantguard\'\nmax_prepared_transactions = 20\ntenantguard.standby_heartbeat = off\ntenantguard.alert_notify = off'
  local n
  for n in coord:$CPORT w1:$W1 w2:$W2; do
    CLUSTER_EXTRA_CONF="$conf${CITUS_EXTRA_CONF:+$'\n'$CITUS_EXTRA_CONF}" tests/lib/cluster.sh start "citus-${n%%:*}" "${n##*:}" preload >/dev/null || return 1
  done
  CDIR=$(tests/lib/cluster.sh dir citus-coord); W1DIR=$(tests/lib/cluster.sh dir citus-w1); W2DIR=$(tests/lib/cluster.sh dir citus-w2)
  for n in coord w1 w2; do $n q postgres "CREATE EXTENSION citus" >/dev/null || return 1; done
  coord q postgres "SELECT citus_set_coordinator_host('127.0.0.1', $CPORT);
    SELECT citus_add_node('127.0.0.1', $W1); SELECT citus_add_node('127.0.0.1', $W2);" >/dev/null || return 1
  coord q postgres "CREATE EXTENSION pg_tenantguard" >/dev/null || return 1
}
citus_stop() { local n; for n in w2 w1 coord; do tests/lib/cluster.sh stop "citus-$n"; done; }
coord() { SOCK=$CDIR/sock PORT=$CPORT "$@"; }
w1() { SOCK=$W1DIR/sock PORT=$W1 "$@"; }
w2() { SOCK=$W2DIR/sock PORT=$W2 "$@"; }
