//! Bans: addresses or networks refused (403) until an expiry, each with the reason it was
//! set and a hit count. A bounded table: host bans in a hash map, network bans (few) in a list
//! checked in order; when full, the ban expiring soonest is dropped first. Pure: callers pass
//! `now_ms`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;

use ipnet::IpNet;

/// Most bans kept at once.
pub const MAX_BANS: usize = 100_000;

/// One ban as shown to operators.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BanInfo {
    /// Address or network (`192.0.2.7/32`, `198.51.100.0/24`).
    pub target: String,
    /// Why: an operator's words, or the rule and values of an automatic ban.
    pub reason: String,
    /// When it was set (ms since the process started).
    pub created_ms: u64,
    /// When it ends (ms since the process started), `None` for never.
    pub expires_ms: Option<u64>,
    /// Requests refused because of it.
    pub hits: u64,
}

#[derive(Debug)]
struct Ban {
    reason: String,
    created_ms: u64,
    expires_ms: Option<u64>,
    hits: AtomicU64,
}

impl Ban {
    fn active(&self, now_ms: u64) -> bool {
        self.expires_ms.is_none_or(|e| now_ms < e)
    }
}

#[derive(Debug, Default)]
struct Table {
    hosts: HashMap<IpAddr, Ban>,
    networks: Vec<(IpNet, Ban)>,
}

/// The ban table.
#[derive(Debug, Default)]
pub struct BanList {
    table: RwLock<Table>,
    /// Fast path: no ban at all.
    empty: AtomicBool,
}

/// A ban that matched a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanHit {
    /// The banned address or network.
    pub target: IpNet,
}

impl BanList {
    /// An empty list.
    pub fn new() -> Self {
        Self {
            table: RwLock::new(Table::default()),
            empty: AtomicBool::new(true),
        }
    }

    /// The active ban covering `ip`, counting a hit.
    pub fn check(&self, ip: IpAddr, now_ms: u64) -> Option<BanHit> {
        if self.empty.load(Ordering::Relaxed) {
            return None;
        }
        let table = self.table.read().ok()?;
        if let Some(ban) = table.hosts.get(&ip).filter(|b| b.active(now_ms)) {
            ban.hits.fetch_add(1, Ordering::Relaxed);
            return Some(BanHit {
                target: IpNet::from(ip),
            });
        }
        table
            .networks
            .iter()
            .find(|(net, ban)| net.contains(&ip) && ban.active(now_ms))
            .map(|(net, ban)| {
                ban.hits.fetch_add(1, Ordering::Relaxed);
                BanHit { target: *net }
            })
    }

    /// Adds or replaces a ban on `target` for `duration_ms` (`None`: until removed).
    pub fn add(&self, target: IpNet, reason: &str, duration_ms: Option<u64>, now_ms: u64) {
        let Ok(mut table) = self.table.write() else {
            return;
        };
        if table.hosts.len() + table.networks.len() >= MAX_BANS {
            // Full: drop expired bans first (a scan, only when full).
            Self::purge(&mut table, now_ms);
        }
        let ban = Ban {
            reason: reason.chars().take(300).collect(),
            created_ms: now_ms,
            expires_ms: duration_ms.map(|d| now_ms.saturating_add(d)),
            hits: AtomicU64::new(0),
        };
        let host = target.prefix_len() == target.max_prefix_len();
        if host {
            table.hosts.insert(target.addr(), ban);
        } else {
            let net = target.trunc();
            table.networks.retain(|(n, _)| *n != net);
            table.networks.push((net, ban));
        }
        while table.hosts.len() + table.networks.len() > MAX_BANS {
            Self::evict_one(&mut table);
        }
        self.empty.store(false, Ordering::Relaxed);
    }

    /// Removes the ban on `target`; returns whether there was one.
    pub fn remove(&self, target: IpNet) -> bool {
        let Ok(mut table) = self.table.write() else {
            return false;
        };
        let removed = if target.prefix_len() == target.max_prefix_len() {
            table.hosts.remove(&target.addr()).is_some()
        } else {
            let before = table.networks.len();
            let net = target.trunc();
            table.networks.retain(|(n, _)| *n != net);
            table.networks.len() != before
        };
        self.empty.store(
            table.hosts.is_empty() && table.networks.is_empty(),
            Ordering::Relaxed,
        );
        removed
    }

    /// Active bans, soonest expiry first.
    pub fn list(&self, now_ms: u64) -> Vec<BanInfo> {
        let Ok(table) = self.table.read() else {
            return Vec::new();
        };
        let info = |target: IpNet, b: &Ban| BanInfo {
            target: target.to_string(),
            reason: b.reason.clone(),
            created_ms: b.created_ms,
            expires_ms: b.expires_ms,
            hits: b.hits.load(Ordering::Relaxed),
        };
        let mut out: Vec<BanInfo> = table
            .hosts
            .iter()
            .filter(|(_, b)| b.active(now_ms))
            .map(|(ip, b)| info(IpNet::from(*ip), b))
            .chain(
                table
                    .networks
                    .iter()
                    .filter(|(_, b)| b.active(now_ms))
                    .map(|(n, b)| info(*n, b)),
            )
            .collect();
        out.sort_by_key(|b| (b.expires_ms.unwrap_or(u64::MAX), b.target.clone()));
        out
    }

    fn purge(table: &mut Table, now_ms: u64) {
        table.hosts.retain(|_, b| b.active(now_ms));
        table.networks.retain(|(_, b)| b.active(now_ms));
    }

    fn evict_one(table: &mut Table) {
        let soonest_host = table
            .hosts
            .iter()
            .min_by_key(|(_, b)| b.expires_ms.unwrap_or(u64::MAX))
            .map(|(ip, _)| *ip);
        if let Some(ip) = soonest_host {
            table.hosts.remove(&ip);
        } else if !table.networks.is_empty() {
            table.networks.remove(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn host_and_network_bans_expire() {
        let bans = BanList::new();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(bans.check(ip, 0), None);
        bans.add(net("192.0.2.7/32"), "manual", Some(1_000), 0);
        bans.add(net("198.51.100.99/24"), "scanner network", None, 0);
        assert_eq!(
            bans.check(ip, 999),
            Some(BanHit {
                target: net("192.0.2.7/32")
            })
        );
        assert_eq!(bans.check(ip, 1_000), None);
        let other: IpAddr = "198.51.100.3".parse().unwrap();
        assert_eq!(
            bans.check(other, 5_000),
            Some(BanHit {
                target: net("198.51.100.0/24")
            })
        );
        let listed = bans.list(5_000);
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].target, "198.51.100.0/24");
        assert_eq!(listed[0].hits, 1);
        assert!(bans.remove(net("198.51.100.0/24")));
        assert!(!bans.remove(net("198.51.100.0/24")));
        assert_eq!(bans.check(other, 5_000), None);
    }

    #[test]
    fn the_table_is_bounded() {
        let bans = BanList::new();
        for i in 0..(MAX_BANS as u32 + 10) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            bans.add(IpNet::from(ip), "flood", Some(60_000 + u64::from(i)), 0);
        }
        assert_eq!(bans.list(0).len(), MAX_BANS);
        // The soonest-expiring ones went first.
        assert_eq!(bans.check("10.0.0.0".parse().unwrap(), 1), None);
        assert!(bans
            .check(
                IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + MAX_BANS as u32 + 9)),
                1
            )
            .is_some());
    }
}
