# Real Nagios plugins (check_dummy, check_tcp, check_http) for the nagios probe tests.
need_pkg monitoring-plugins-basic
echo "export GRIDPROBE_TEST_PLUGINS=/usr/lib/nagios/plugins"
