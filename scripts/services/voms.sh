# A real VOMS server for the credential tests: Debian's voms-server with its MariaDB backend
# (the database voms_gridprobe on the shared MariaDB at 127.0.0.1:3306), a test CA, a host
# certificate for the VOMS server and a robot certificate that is a member of the VO
# `gridprobe` (group /gridprobe, role /gridprobe/Role=production). voms-proxy-init (Debian
# voms-clients) gets proxies from it. Sourced by scripts/test-env.sh; idempotent and quiet.
#
# Everything lives under $GRIDPROBE_SERVICES/voms (default /tmp/gridprobe-services/voms):
#   ca/            the CA (hash-named, as in /etc/grid-security/certificates)
#   robot/         usercert.pem, userkey.pem (0600)
#   vomses/        the VO's server list for voms-proxy-init
#   vomsdir/       the .lsc file that makes the server trusted
#
# Beside it, an XRootD server of its own (port $GRIDPROBE_VOMS_XROOTD_PORT, default 11095)
# that admits GSI only, i.e. a client certificate or proxy of the test CA: the storage probe
# reaches it with the proxy gridprobe made (nginx cannot serve here: OpenSSL 3 refuses RFC 3820
# proxies unless the server sets X509_V_FLAG_ALLOW_PROXY_CERTS, which nginx has no option for).
# Exports GRIDPROBE_TEST_VOMS_{DIR,PORT,VO,CERT,KEY,CERTDIR,VOMSES,VOMSDIR,CA_FILE,XROOTD}.
need_pkg voms-server voms-clients voms-mysql-plugin openssl mariadb-client xrootd-server xrootd-client

voms_port=${GRIDPROBE_VOMS_PORT:-15010}
voms_dir=${GRIDPROBE_SERVICES:-/tmp/gridprobe-services}/voms
voms_vo=gridprobe
voms_db=voms_gridprobe
voms_sql() { mysql -h 127.0.0.1 -P 3306 -u root "$@"; }

# The certificate's subject in the slash form VOMS stores and compares (/O=x/CN=y).
voms_dn() { openssl x509 -noout -subject -nameopt compat -in "$1" | sed 's/^subject=[ ]*//'; }

voms_pki() {
    [ -s "$voms_dir/robot/usercert.pem" ] && [ -s "$voms_dir/host/hostcert.pem" ] && return 0
    mkdir -p "$voms_dir"/{pki,ca,host,robot}
    local p="$voms_dir/pki"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/O=gridprobe/CN=gridprobe test CA" \
        -keyout "$p/ca.key" -out "$p/ca.pem" \
        -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        >/dev/null 2>&1
    local ext="$p/ext.cnf"
    printf '[host]\nbasicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n[user]\nbasicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >"$ext"
    openssl req -newkey rsa:2048 -nodes -subj "/O=gridprobe/CN=localhost" \
        -keyout "$voms_dir/host/hostkey.pem" -out "$p/host.csr" >/dev/null 2>&1
    openssl x509 -req -in "$p/host.csr" -CA "$p/ca.pem" -CAkey "$p/ca.key" -CAcreateserial \
        -days 3650 -extfile "$ext" -extensions host -out "$voms_dir/host/hostcert.pem" >/dev/null 2>&1
    openssl req -newkey rsa:2048 -nodes -subj "/O=gridprobe/OU=robots/CN=gridprobe robot" \
        -keyout "$voms_dir/robot/userkey.pem" -out "$p/robot.csr" >/dev/null 2>&1
    openssl x509 -req -in "$p/robot.csr" -CA "$p/ca.pem" -CAkey "$p/ca.key" -CAcreateserial \
        -days 3650 -extfile "$ext" -extensions user -out "$voms_dir/robot/usercert.pem" >/dev/null 2>&1
    chmod 600 "$voms_dir/robot/userkey.pem" "$voms_dir/host/hostkey.pem" "$p/ca.key"
    cp "$p/ca.pem" "$voms_dir/ca/$(openssl x509 -noout -hash -in "$p/ca.pem").0"
    rm -f "$p"/*.csr
}

voms_files() {
    local host_dn ca_dn
    host_dn="$(voms_dn "$voms_dir/host/hostcert.pem")"
    ca_dn="$(voms_dn "$voms_dir/pki/ca.pem")"
    mkdir -p "$voms_dir/vomses" "$voms_dir/vomsdir/$voms_vo" "$voms_dir/run"
    printf '"%s" "localhost" "%s" "%s" "%s"\n' "$voms_vo" "$voms_port" "$host_dn" "$voms_vo" \
        >"$voms_dir/vomses/$voms_vo"
    # The attribute certificate names the server by its host name (gethostname), and the
    # client looks for <vomsdir>/<vo>/<that name>.lsc.
    local h
    for h in localhost "$(hostname)" "$(hostname -f 2>/dev/null || hostname)"; do
        printf '%s\n%s\n' "$host_dn" "$ca_dn" >"$voms_dir/vomsdir/$voms_vo/$h.lsc"
    done
}

voms_database() {
    if voms_sql -N -e "SELECT COUNT(*) FROM $voms_db.usr" 2>/dev/null | grep -qx 1; then
        return 0
    fi
    local robot_dn ca_dn
    robot_dn="$(voms_dn "$voms_dir/robot/usercert.pem")"
    ca_dn="$(voms_dn "$voms_dir/pki/ca.pem")"
    voms_sql -e "DROP DATABASE IF EXISTS $voms_db; CREATE DATABASE $voms_db;"
    voms_sql -D "$voms_db" </usr/share/voms/voms-mysql.data
    voms_sql -e "CREATE USER IF NOT EXISTS 'voms_gridprobe'@'%' IDENTIFIED BY 'voms-test';
        CREATE USER IF NOT EXISTS 'voms_gridprobe'@'localhost' IDENTIFIED BY 'voms-test';
        GRANT SELECT, LOCK TABLES ON $voms_db.* TO 'voms_gridprobe'@'%';
        GRANT SELECT, LOCK TABLES ON $voms_db.* TO 'voms_gridprobe'@'localhost';
        FLUSH PRIVILEGES;"
    voms_sql -D "$voms_db" <<EOF
INSERT INTO ca VALUES (1, '/O=VOMS/O=System/CN=Dummy Certificate Authority', 'dummy');
INSERT INTO ca VALUES (2, '/O=VOMS/O=System/CN=Authorization Manager Attributes', 'authz');
INSERT INTO ca VALUES (3, '/O=VOMS/O=System/CN=VOMS Group', 'group');
INSERT INTO ca VALUES (4, '/O=VOMS/O=System/CN=VOMS Role', 'role');
INSERT INTO ca VALUES (5, '/O=VOMS/O=System/CN=VOMS Capability', 'capability');
INSERT INTO ca VALUES (6, '$ca_dn', 'gridprobe test CA');
INSERT INTO admins VALUES (1, '/O=VOMS/O=System/CN=Local Database Administrator', '', 1);
INSERT INTO groups VALUES (1, '/$voms_vo', 1, 1);
INSERT INTO roles VALUES (1, 'VO-Admin');
INSERT INTO roles VALUES (2, 'production');
INSERT INTO seqnumber VALUES ('00');
INSERT INTO version (version) VALUES (2);
INSERT INTO usr (userid, dn, ca, cn, mail) VALUES (1, '$robot_dn', 6, 'gridprobe robot', 'robot@example.org');
INSERT INTO m (userid, gid, rid, cid) VALUES (1, 1, NULL, NULL);
INSERT INTO m (userid, gid, rid, cid) VALUES (1, 1, 2, NULL);
EOF
}

voms_running() {
    pgrep -f "^/usr/sbin/voms -vo $voms_vo -port $voms_port " >/dev/null
}

voms_probe() {
    local out
    out="$(mktemp)"
    X509_VOMS_DIR="$voms_dir/vomsdir" voms-proxy-init -cert "$voms_dir/robot/usercert.pem" \
        -key "$voms_dir/robot/userkey.pem" -certdir "$voms_dir/ca" -vomses "$voms_dir/vomses" \
        -voms "$voms_vo" -out "$out" -rfc -quiet >/dev/null 2>&1
    local rc=$?
    rm -f "$out"
    return $rc
}

voms_up() {
    voms_pki
    voms_files
    voms_database
    voms_running && return 0
    printf 'voms-test\n' >"$voms_dir/run/voms.pass"
    chmod 640 "$voms_dir/run/voms.pass"  # vomsd insists on 640
    log "starting voms for vo $voms_vo on 127.0.0.1:$voms_port"
    /usr/sbin/voms -vo "$voms_vo" -port "$voms_port" -dbname "$voms_db" -username voms_gridprobe \
        -passfile "$voms_dir/run/voms.pass" -contactstring 127.0.0.1 -mysql-port 3306 \
        -sqlloc /usr/lib/voms/libvomsmysql.so -x509_cert_dir "$voms_dir/ca" \
        -x509_user_cert "$voms_dir/host/hostcert.pem" -x509_user_key "$voms_dir/host/hostkey.pem" \
        -logfile "$voms_dir/run/voms.log" -loglevel 2 >/dev/null 2>&1
    wait_for 20 voms_probe || {
        log "voms did not answer; see $voms_dir/run/voms.log"
        return 1
    }
}

voms_xrootd_port=${GRIDPROBE_VOMS_XROOTD_PORT:-11095}

voms_xrootd_running() {
    local pid
    pid="$(cat "$voms_dir/xrootd/run/xrootd.pid" 2>/dev/null)" || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = xrootd ]
}

voms_xrootd_up() {
    local x="$voms_dir/xrootd"
    voms_xrootd_running && return 0
    as_root mkdir -p "$x/admin" "$x/run" "$x/root/data" "$x/sec"
    as_root cp "$voms_dir/host/hostcert.pem" "$voms_dir/host/hostkey.pem" "$x/sec/"
    as_root chmod 400 "$x/sec/hostkey.pem"
    cat <<EOF | as_root tee "$x/xrootd.cfg" >/dev/null
# Generated by scripts/services/voms.sh; edits are overwritten.
xrd.port $voms_xrootd_port
xrd.network nodnr
all.role server
all.adminpath $x/admin
all.pidpath $x/run
oss.localroot $x/root
all.export /data
xrootd.chksum adler32
xrootd.seclib libXrdSec.so
sec.protocol gsi -certdir:$voms_dir/ca -cert:$x/sec/hostcert.pem -key:$x/sec/hostkey.pem -crl:0 -gmapopt:0 -vomsat:0 -dlgpxy:0
sec.protbind * only gsi
EOF
    as_root chown -R xrootd:xrootd "$x"
    log "starting GSI xrootd on localhost:$voms_xrootd_port"
    (cd "$x" && as_root xrootd -b -R xrootd -n gridprobe-gsi -c "$x/xrootd.cfg" -l "$x/xrootd.log" \
        -s "$x/run/xrootd.pid" >/dev/null 2>&1)
    wait_for 15 bash -c "exec 3<>/dev/tcp/127.0.0.1/$voms_xrootd_port" || {
        log "GSI xrootd did not come up; see $x/gridprobe-gsi/xrootd.log"
        return 1
    }
}

voms_up
voms_xrootd_up
echo "export GRIDPROBE_TEST_VOMS_XROOTD=root://localhost:$voms_xrootd_port"
echo "export GRIDPROBE_TEST_VOMS_DIR=$voms_dir"
echo "export GRIDPROBE_TEST_VOMS_PORT=$voms_port"
echo "export GRIDPROBE_TEST_VOMS_VO=$voms_vo"
echo "export GRIDPROBE_TEST_VOMS_CERT=$voms_dir/robot/usercert.pem"
echo "export GRIDPROBE_TEST_VOMS_KEY=$voms_dir/robot/userkey.pem"
echo "export GRIDPROBE_TEST_VOMS_CERTDIR=$voms_dir/ca"
echo "export GRIDPROBE_TEST_VOMS_VOMSES=$voms_dir/vomses"
echo "export GRIDPROBE_TEST_VOMS_VOMSDIR=$voms_dir/vomsdir"
echo "export GRIDPROBE_TEST_VOMS_CA_FILE=$voms_dir/pki/ca.pem"
