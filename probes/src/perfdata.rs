//! Nagios performance data parsing (being written).
