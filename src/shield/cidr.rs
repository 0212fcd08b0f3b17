//! A set of networks read from a list file (one address or CIDR per line, `#` comments), for
//! static allow and deny lists. Lookup costs one hash probe per distinct prefix length in the
//! list, so a list of 100,000 entries costs the same per request as a list of ten.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

/// Networks grouped by prefix length.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidrSet {
    v4: Vec<(u8, HashSet<u32>)>,
    v6: Vec<(u8, HashSet<u128>)>,
    len: usize,
}

impl CidrSet {
    /// Adds a network.
    pub fn insert(&mut self, net: IpNet) {
        match net.trunc() {
            IpNet::V4(n) => {
                let key = u32::from(n.network());
                let at = match self.v4.iter().position(|(l, _)| *l == n.prefix_len()) {
                    Some(i) => i,
                    None => {
                        self.v4.push((n.prefix_len(), HashSet::new()));
                        self.v4.len() - 1
                    }
                };
                let set = &mut self.v4[at].1;
                if set.insert(key) {
                    self.len += 1;
                }
            }
            IpNet::V6(n) => {
                let key = u128::from(n.network());
                let at = match self.v6.iter().position(|(l, _)| *l == n.prefix_len()) {
                    Some(i) => i,
                    None => {
                        self.v6.push((n.prefix_len(), HashSet::new()));
                        self.v6.len() - 1
                    }
                };
                let set = &mut self.v6[at].1;
                if set.insert(key) {
                    self.len += 1;
                }
            }
        }
    }

    /// Whether `ip` is in one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                self.v4.iter().any(|(len, set)| {
                    set.contains(&(bits & u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0)))
                })
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                self.v6.iter().any(|(len, set)| {
                    set.contains(
                        &(bits & u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0)),
                    )
                })
            }
        }
    }

    /// Number of networks.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Parses a list; errors name the 1-based line.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut set = Self::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let net = line
                .parse::<IpNet>()
                .ok()
                .or_else(|| line.parse::<IpAddr>().ok().map(IpNet::from))
                .ok_or_else(|| (i + 1, format!("`{line}` is not an address or CIDR")))?;
            set.insert(net);
        }
        Ok(set)
    }

    /// Reads and parses a list file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        Self::parse(&text).map_err(|(line, msg)| format!("{}:{line}: {msg}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_by_prefix_length() {
        let set = CidrSet::parse("# bots\n192.0.2.7\n198.51.100.0/24 # scanner\n2001:db8::/32\n\n")
            .unwrap();
        assert_eq!(set.len(), 3);
        for yes in ["192.0.2.7", "198.51.100.200", "2001:db8:ffff::1"] {
            assert!(set.contains(yes.parse().unwrap()), "{yes}");
        }
        for no in [
            "192.0.2.8",
            "198.51.101.1",
            "2001:db9::1",
            "::ffff:192.0.2.7",
        ] {
            assert!(!set.contains(no.parse().unwrap()), "{no}");
        }
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(CidrSet::parse("10.0.0.0/8\nnope\n").unwrap_err().0, 2);
        assert!(CidrSet::parse("10.0.0.0/33").is_err());
    }

    #[test]
    fn large_lists_stay_cheap() {
        let mut set = CidrSet::default();
        for i in 0..100_000u32 {
            set.insert(IpNet::from(IpAddr::V4(std::net::Ipv4Addr::from(
                0x0a00_0000 + i,
            ))));
        }
        set.insert("172.16.0.0/12".parse().unwrap());
        assert_eq!(set.v4.len(), 2, "two prefix lengths, two probes per lookup");
        assert!(set.contains("10.1.134.159".parse().unwrap()));
        assert!(set.contains("172.20.1.1".parse().unwrap()));
        assert!(!set.contains("10.2.0.0".parse().unwrap()));
    }
}
