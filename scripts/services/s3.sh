#!/usr/bin/env bash
# The S3 service of the tests and benches: a throwaway single-node OpenStack Swift with its s3api
# middleware (a real S3 protocol server; tempauth + memcached), 127.0.0.1 only, all state in
# STATE_DIR. Debian packages: python3-swift memcached (scripts/setup.sh); no /etc/swift is read.
#   s3.sh start STATE_DIR  -> KEY=value lines: DELTACI_TEST_S3_ENDPOINT, DELTACI_TEST_S3_BUCKET,
#                             AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION
#   s3.sh stop STATE_DIR   -> stops only the processes start recorded, removes STATE_DIR
# Gotchas (from ../../shared notes, measured here): Swift hard-codes /etc/swift/swift.conf (the
# helper repoints it); eventlet's monkey_patch is done first or start takes ~13 s; workers = 0
# so nothing drops privileges (setpriv execs as `swift` when run as root); the daemons setsid(),
# so always run `stop`; the region must be us-east-1; clients need checksums WHEN_REQUIRED and
# Content-MD5 on DeleteObjects.
set -euo pipefail

PY=/usr/bin/python3            # Debian's python: python3-swift lives there
export SETUPTOOLS_USE_DISTUTILS=stdlib   # keep setuptools' distutils shim out of eventlet's import
MARKER=.deltaci-s3-owned
ACCOUNT=test
USERNAME=tester
BUCKET=deltaci-test

die() { echo "services/s3: $*" >&2; exit 1; }
log() { echo "services/s3: $*" >&2; }

write_helper() {
cat > "$1" <<'PYEOF'
# helper for scripts/services/s3.sh: ports | rings | serve | xattr | health
import os, sys
if __name__ == '__main__' and sys.argv[1:2] == ['serve']:
    # Swift calls this same monkey_patch() later; eventlet then runs
    # gc.collect() once per RLock alive at that point (~2.5 s of CPU per
    # process). Doing it first, before logging & co. exist, costs ~0.2 s.
    import eventlet
    eventlet.patcher.monkey_patch(all=False, socket=True, select=True,
                                  thread=True)
import socket, time, logging, secrets
import urllib.request, urllib.error

def ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket(); s.bind(('127.0.0.1', 0)); socks.append(s)
    print(' '.join(str(s.getsockname()[1]) for s in socks))
    for s in socks: s.close()

def use_swift_dir(etc):
    # Swift reads /etc/swift/swift.conf unless told otherwise; point it here.
    from swift.common import utils
    utils.SWIFT_CONF_FILE = os.path.join(etc, 'swift.conf')
    utils.HASH_PATH_PREFIX = utils.HASH_PATH_SUFFIX = b''
    utils.validate_configuration()
    from swift.common import storage_policy
    storage_policy.reload_storage_policies()
    return utils

def rings(etc, a, c, o):
    use_swift_dir(etc)
    from swift.common.ring import RingBuilder
    for name, port in (('account', a), ('container', c), ('object', o)):
        b = RingBuilder(8, 1, 1)
        b.add_dev({'id': 0, 'region': 1, 'zone': 1, 'ip': '127.0.0.1',
                   'port': int(port), 'device': 'd1', 'weight': 100.0,
                   'meta': ''})
        b.rebalance()
        b.save(os.path.join(etc, name + '.builder'))
        b.get_ring().save(os.path.join(etc, name + '.ring.gz'))

def xattr_check(d):
    import xattr, tempfile
    fd, p = tempfile.mkstemp(dir=d)
    try:
        xattr.setxattr(fd, 'user.swift.metadata', b'x' * 254)
        xattr.setxattr(fd, 'user.swift.metadata1', b'y' * 254)
        assert xattr.getxattr(fd, 'user.swift.metadata1') == b'y' * 254
    finally:
        os.close(fd); os.unlink(p)

def serve(etc, conf, section, logfile):
    utils = use_swift_dir(etc)
    # No syslog here: send every swift logger to one append-only file instead
    # of syslog / UDP 127.0.0.1:514 (swift's fallback when /dev/log is absent).
    stream = open(logfile, 'a', buffering=1)
    shared = logging.StreamHandler(stream)
    utils.ThreadSafeSysLogHandler = lambda *a, **k: shared
    from swift.common.wsgi import run_wsgi
    sys.exit(run_wsgi(conf, section))

def http(method, url, headers=None, data=None):
    req = urllib.request.Request(url, data=data, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()

def health(pidfiles, timeout, proxy, a, c, o, user, key, bucket):
    deadline = time.time() + float(timeout)
    pending = [proxy, a, c, o]
    while pending:
        for pf in pidfiles.split(','):
            pid = int(open(pf).read())
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                sys.exit('process from %s (pid %d) died' % (pf, pid))
        for p in list(pending):
            try:
                if http('GET', 'http://127.0.0.1:%s/healthcheck' % p)[0] == 200:
                    pending.remove(p)
            except OSError:
                pass
        if pending:
            if time.time() > deadline:
                sys.exit('timeout waiting for ports %s' % pending)
            time.sleep(0.1)
    base = 'http://127.0.0.1:%s' % proxy
    # s3api answers a request carrying S3 auth with an S3 XML error
    st, _, body = http('GET', base + '/', {
        'Authorization': 'AWS nobody:nobody:x',
        'Date': time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime())})
    if st != 403 or b'<Error>' not in body:
        sys.exit('s3api not answering: %s %r' % (st, body[:200]))
    # full write path through tempauth (uses memcached for the token)
    st, h, _ = http('GET', base + '/auth/v1.0',
                    {'X-Auth-User': user, 'X-Auth-Key': key})
    if st != 200:
        sys.exit('tempauth: %s' % st)
    tok, url = {'X-Auth-Token': h['X-Auth-Token']}, h['X-Storage-Url']
    cont = url + '/swift-s3-health-' + secrets.token_hex(4)
    steps = [('PUT', cont, None, (201, 202)),
             ('PUT', cont + '/o', b'ok', (201,)),
             ('GET', cont + '/o', None, (200,)),
             ('DELETE', cont + '/o', None, (204,)),
             ('DELETE', cont, None, (204,))]
    for m, u, d, ok in steps:
        st, _, body = http(m, u, tok, d)
        if st not in ok or (m == 'GET' and body != b'ok'):
            sys.exit('health %s %s -> %s' % (m, u, st))
    # the test bucket: an S3 bucket is a Swift container of the account
    st, _, _ = http('PUT', url + '/' + bucket, tok)
    if st not in (201, 202):
        sys.exit('bucket %s -> %s' % (bucket, st))

if __name__ == '__main__':
    cmd, args = sys.argv[1], sys.argv[2:]
    {'ports': lambda: ports(int(args[0])),
     'rings': lambda: rings(*args),
     'xattr': lambda: xattr_check(*args),
     'serve': lambda: serve(*args),
     'health': lambda: health(*args)}[cmd]()
PYEOF
}

spawn() {  # name cmd...  -- a plain simple command with &, so $! is the daemon itself
  local name=$1; shift
  local pre=()
  if [ "$(id -u)" = 0 ] && [ "$RUN_USER" != root ]; then
    pre=(setpriv --reuid="$RUN_USER" --regid="$(id -g "$RUN_USER")" --init-groups --)  # execs in place
  fi
  DELTACI_S3_DIR="$DIR" "${pre[@]}" "$@" </dev/null >>"$DIR/log/$name.log" 2>&1 &
  echo $! > "$DIR/run/$name.pid"
}

as_user() {
  if [ "$(id -u)" = 0 ] && [ "$RUN_USER" != root ]; then
    setpriv --reuid="$RUN_USER" --regid="$(id -g "$RUN_USER")" --init-groups -- "$@"
  else
    "$@"
  fi
}

server_conf() {  # name port -> account/container/object server config
  cat <<CONF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $2
workers = 0
user = $RUN_USER
swift_dir = $DIR/etc
devices = $DIR/srv
mount_check = false
disable_fallocate = true
log_level = WARNING
recon_cache_path = $DIR/cache

[pipeline:main]
pipeline = healthcheck $1-server

[app:$1-server]
use = egg:swift#$1
# no updater daemon runs: a late container update would leave an object out of listings
conn_timeout = 5
node_timeout = 30
container_update_timeout = 30
network_chunk_size = 65536
disk_chunk_size = 65536

[filter:healthcheck]
use = egg:swift#healthcheck
CONF
}

proxy_conf() {  # port memcached-port secret
  cat <<CONF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $1
workers = 0
user = $RUN_USER
swift_dir = $DIR/etc
log_level = WARNING

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk s3api tempauth copy slo dlo versioned_writes proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
conn_timeout = 5
node_timeout = 60
object_chunk_size = 65536
client_chunk_size = 65536

[filter:s3api]
use = egg:swift#s3api
location = us-east-1
s3_acl = false

[filter:tempauth]
use = egg:swift#tempauth
user_${ACCOUNT}_${USERNAME} = $3 .admin

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$2

[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:bulk]
use = egg:swift#bulk
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
[filter:versioned_writes]
use = egg:swift#versioned_writes
CONF
}

start() {
  DIR=${1:?start needs STATE_DIR}
  [ -x "$PY" ] && "$PY" -c 'import swift, xattr' 2>/dev/null ||
    die "python3-swift missing: run scripts/setup.sh (apt-get install python3-swift memcached)"
  command -v memcached >/dev/null || die "memcached missing: run scripts/setup.sh"
  mkdir -p "$DIR"
  [ -z "$(ls -A "$DIR")" ] || die "$DIR is not empty"
  DIR=$(cd "$DIR" && pwd)
  touch "$DIR/$MARKER"
  # any failure or interrupt from here on: stop what was started, remove DIR
  trap 'rc=$?; trap - EXIT; [ $rc = 0 ] || stop "$DIR" >&2 || true; exit $rc' EXIT
  trap 'exit 130' INT TERM

  if [ "$(id -u)" = 0 ] && id swift >/dev/null 2>&1; then RUN_USER=swift; else RUN_USER=$(id -un); fi
  mkdir -p "$DIR/etc" "$DIR/srv/d1" "$DIR/log" "$DIR/run" "$DIR/cache"
  write_helper "$DIR/helper.py"
  chmod 755 "$DIR"
  touch "$DIR/log/"{memcached,account,container,object,proxy}.log
  [ "$(id -u)" != 0 ] || chown -R "$RUN_USER" "$DIR/srv" "$DIR/log" "$DIR/cache"
  as_user "$PY" "$DIR/helper.py" xattr "$DIR/srv/d1" ||
    die "user.* xattrs unusable in $DIR/srv/d1 as $RUN_USER (filesystem or permissions)"

  local p_proxy p_acc p_con p_obj p_mc secret
  read -r p_proxy p_acc p_con p_obj p_mc <<<"$("$PY" "$DIR/helper.py" ports 5)"
  secret=$("$PY" -c 'import secrets; print(secrets.token_hex(20))')
  cat > "$DIR/etc/swift.conf" <<CONF
[swift-hash]
swift_hash_path_prefix = $("$PY" -c 'import secrets; print(secrets.token_hex(8))')
swift_hash_path_suffix = $("$PY" -c 'import secrets; print(secrets.token_hex(8))')
[storage-policy:0]
name = Policy-0
default = yes
[swift-constraints]
# S3 allows 2 KB of user metadata; Swift's default per-value cap is 256 bytes
max_meta_value_length = 2048
CONF
  server_conf account "$p_acc" > "$DIR/etc/account-server.conf"
  server_conf container "$p_con" > "$DIR/etc/container-server.conf"
  server_conf object "$p_obj" > "$DIR/etc/object-server.conf"
  proxy_conf "$p_proxy" "$p_mc" "$secret" > "$DIR/etc/proxy-server.conf"
  "$PY" "$DIR/helper.py" rings "$DIR/etc" "$p_acc" "$p_con" "$p_obj" || die "ring build failed"

  spawn memcached memcached -l 127.0.0.1 -p "$p_mc" -U 0 -m 64 -c 256
  for name in account container object proxy; do
    spawn "$name" "$PY" "$DIR/helper.py" serve "$DIR/etc" "$DIR/etc/$name-server.conf" "$name-server" "$DIR/log/$name.log"
  done
  local pidfiles; pidfiles=$(printf "$DIR/run/%s.pid," account container object proxy memcached)
  if ! "$PY" "$DIR/helper.py" health "${pidfiles%,}" 60 "$p_proxy" "$p_acc" "$p_con" "$p_obj" \
      "$ACCOUNT:$USERNAME" "$secret" "$BUCKET" >&2; then
    log "not healthy; log tails follow"
    tail -n 20 "$DIR"/log/*.log >&2 || true
    exit 1
  fi
  echo "DELTACI_TEST_S3_ENDPOINT=http://127.0.0.1:$p_proxy"
  echo "DELTACI_TEST_S3_BUCKET=$BUCKET"
  echo "AWS_ACCESS_KEY_ID=$ACCOUNT:$USERNAME"
  echo "AWS_SECRET_ACCESS_KEY=$secret"
  echo "AWS_REGION=us-east-1"
}

stop() {
  DIR=${1:?stop needs STATE_DIR}
  [ -d "$DIR" ] || return 0
  [ -e "$DIR/$MARKER" ] || die "stop: $DIR was not made by s3.sh start"
  DIR=$(cd "$DIR" && pwd)
  local pids=() pid st
  for name in proxy object container account memcached; do
    [ -f "$DIR/run/$name.pid" ] || continue
    pid=$(cat "$DIR/run/$name.pid")
    # signal the pid only while it is still the process start spawned (its environ names DIR)
    if { tr '\0' '\n' < "/proc/$pid/environ"; } 2>/dev/null | grep -qxF "DELTACI_S3_DIR=$DIR"; then
      kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    fi
  done
  for _ in $(seq 50); do
    local alive=0
    for pid in "${pids[@]}"; do  # a zombie counts as gone
      st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
      [ -n "$st" ] && [ "$st" != Z ] && alive=1
    done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$DIR"
}

case "${1:-}" in
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  *) echo "usage: $0 start STATE_DIR | stop STATE_DIR" >&2; exit 2 ;;
esac
