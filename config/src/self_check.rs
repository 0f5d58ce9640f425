//! `[server.self_check]`: references the monitoring host must reach for its own results to be
//! trusted. While one of them fails, connection-level CRITICALs are recorded UNKNOWN
//! (docs/availability.md, "The monitoring's own failures").

use std::time::Duration;

/// The self-check of the monitoring host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfCheck {
    /// Time between two rounds of checks.
    pub interval: Duration,
    /// Deadline of each check.
    pub timeout: Duration,
    /// Names that must resolve (DNS).
    pub resolve: Vec<String>,
    /// `host:port` endpoints that must accept a TCP connection.
    pub connect: Vec<(String, u16)>,
}

impl SelfCheck {
    /// Default time between rounds.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
    /// Default deadline of one check.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Most references of each sort.
    pub const MAX_REFERENCES: usize = 16;
}

/// Splits `host:port` (`[v6]:port` for IPv6), the port 1 to 65535.
pub fn split_host_port(text: &str) -> Result<(String, u16), String> {
    let text = text.trim();
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (h, p) = rest
            .split_once("]:")
            .ok_or_else(|| format!("`{text}` is not [IPv6]:PORT"))?;
        (h, p)
    } else {
        text.rsplit_once(':')
            .ok_or_else(|| format!("`{text}` has no port (write HOST:PORT)"))?
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("`{text}` has no valid host"));
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("`{text}`: the port must be a number from 1 to 65535"))?;
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports() {
        assert_eq!(split_host_port("a.b:80"), Ok(("a.b".into(), 80)));
        assert_eq!(split_host_port("[::1]:443"), Ok(("::1".into(), 443)));
        assert!(split_host_port("a.b").is_err());
        assert!(split_host_port("a.b:0").is_err());
        assert!(split_host_port("a.b:99999").is_err());
        assert!(split_host_port(":80").is_err());
    }
}
