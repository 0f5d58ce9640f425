# Notification receivers for tests/notify.rs: Debian's python3-aiosmtpd (an SMTP server the
# tests start themselves, on a free port, writing to a Maildir, so they can also stop it to see
# delivery resume) and prometheus-alertmanager (started by the tests with their own
# configuration and data directory). The package's own alertmanager daemon is not wanted: while
# it installs, a policy-rc.d (if the machine has none) stops its maintainer scripts from
# starting it. Sourced by scripts/test-env.sh.
need_pkg python3-aiosmtpd
if ! dpkg-query -W -f='${Status}' prometheus-alertmanager 2>/dev/null | grep -q "install ok installed"; then
    alertmanager_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# Temporary, from gridprobe scripts/services/notify.sh\nexit 101\n' |
            as_root tee /usr/sbin/policy-rc.d >/dev/null
        as_root chmod 755 /usr/sbin/policy-rc.d
        alertmanager_policy=1
    fi
    alertmanager_rc=0
    need_pkg prometheus-alertmanager || alertmanager_rc=$?
    [ $alertmanager_policy -eq 1 ] && as_root rm -f /usr/sbin/policy-rc.d
    [ $alertmanager_rc -eq 0 ] || return $alertmanager_rc
fi
if ! /usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
    log "python3-aiosmtpd is installed but /usr/bin/python3 cannot import aiosmtpd"
    return 1
fi
if ! command -v prometheus-alertmanager >/dev/null 2>&1; then
    log "prometheus-alertmanager is installed but not on PATH"
    return 1
fi
echo "export GRIDPROBE_TEST_AIOSMTPD=/usr/bin/python3"
echo "export GRIDPROBE_TEST_ALERTMANAGER=$(command -v prometheus-alertmanager)"
