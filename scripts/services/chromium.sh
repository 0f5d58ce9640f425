# Headless Chromium and its WebDriver for the dashboard tests (tests/dashboard.rs): Debian's
# `chromium` and `chromium-driver` from the distribution (same version, so the driver matches the
# browser), plus a font so screenshots show text. Sourced by scripts/test-env.sh; the test starts
# chromedriver itself on a free port, so nothing is left running here.
need_pkg chromium chromium-driver fonts-dejavu-core

chromium_bin=/usr/bin/chromium
chromedriver_bin=/usr/bin/chromedriver
if ! "$chromium_bin" --headless --no-sandbox --disable-gpu --version >/dev/null 2>&1 &&
    ! "$chromium_bin" --version >/dev/null 2>&1; then
    log "chromium installed but does not start: $chromium_bin --version failed"
fi
if ! "$chromedriver_bin" --version >/dev/null 2>&1; then
    log "chromedriver installed but does not start: $chromedriver_bin --version failed"
fi
echo "export GRIDPROBE_TEST_CHROMIUM=$chromium_bin"
echo "export GRIDPROBE_TEST_CHROMEDRIVER=$chromedriver_bin"
