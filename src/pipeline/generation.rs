//! A generation: everything derived from one validated configuration (pools, counters,
//! per-tenant handles), swapped atomically on reload. State that must outlive a reload
//! (bans, the replay guard, tenant flags and signals, shield counters, stale copies) is
//! carried over from the previous generation, per tenant by id.

use std::sync::Arc;

use http::HeaderValue;
use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;

use crate::common::TenantKey;
use crate::config::runtime::Tenant;
use crate::config::Runtime;
use crate::degraded::stale::StaleCache;
use crate::metrics::Metrics;
use crate::proxy::client::ClientSettings;
use crate::proxy::headers;
use crate::proxy::upstream::Pool;
use crate::shield::defence::Defence;
use crate::signals::TenantSignals;
use crate::state::local::{LocalReplay, StaticKeys, TenantState};
use crate::state::{BanStore, PassKeys, ReplayStore, TenantFlags};

/// Everything derived from one configuration, swapped atomically on reload.
pub struct Generation {
    /// The validated configuration.
    pub config: Arc<Runtime>,
    /// Stable keys of the tenants, in `config.tenants` order (shield counters are keyed by
    /// them, so reordering tenants in a reload keeps every count).
    pub tenant_keys: Vec<TenantKey>,
    /// Pools per tenant, in `config.tenants[i].pools` order.
    pub pools: Vec<Vec<Arc<Pool>>>,
    /// Request counters per tenant and route.
    pub route_counters: Vec<Vec<[Counter; 5]>>,
    /// Request counters for requests with no tenant or route.
    pub unrouted_counters: [Counter; 5],
    /// Upstream client settings.
    pub client: ClientSettings,
    /// Whether to write access-log lines.
    pub access_log: bool,
    /// Cancelled when this generation is replaced (stops its health checks).
    pub retired: CancellationToken,
    /// Our `Via` entries for HTTP/1.1 and HTTP/2 downstream.
    pub via: [HeaderValue; 2],
    /// Flood-defence counters (kept across reloads while the prefix lengths are unchanged).
    pub shield: Arc<crate::shield::Shield>,
    /// Bans (kept across reloads).
    pub bans: Arc<dyn BanStore>,
    /// Certificates from the ACME authority and the challenges it checks (kept across
    /// reloads).
    pub acme: Arc<crate::acme::Acme>,
    /// Challenge nonces issued and used (kept across reloads).
    pub replay: Arc<dyn ReplayStore>,
    /// Keys signing pass cookies and challenge tokens.
    pub keys: Arc<dyn PassKeys>,
    /// Shield decision counters per tenant (see `Metrics::shield_counters`).
    pub shield_counters: Vec<[Counter; crate::metrics::SHIELD_COUNTERS]>,
    /// Node-local defence state shared by all generations (good history, tarpit).
    pub defence: Arc<Defence>,
    /// Per-tenant defence flags, in `config.tenants` order (kept across reloads by id).
    pub tenant_flags: Vec<Arc<dyn TenantFlags>>,
    /// Per-tenant signals, in `config.tenants` order (kept across reloads by id).
    pub signals: Vec<Arc<TenantSignals>>,
    /// Gateway-wide signals: connection trips and requests with no tenant.
    pub gateway_signals: Arc<TenantSignals>,
    /// Status pages (shared by all generations).
    pub status: Arc<crate::status::StatusService>,
    /// Stale copies of public pages (kept across reloads while the sizes are unchanged).
    pub stale: Arc<StaleCache>,
    /// Answers served from stale copies, per tenant in `config.tenants` order.
    pub stale_served: Vec<Counter>,
    /// Request bodies read whole before forwarding (kept across reloads while its settings
    /// are unchanged).
    pub bodies: Arc<crate::proxy::buffer::BodyStore>,
    /// Data guard: the access journal, once a route has a guard (kept across reloads while
    /// its path is the same).
    pub guard_journal: Option<Arc<crate::guard::journal::Journal>>,
    /// Data guard: where what accounts take is told to other nodes (cluster mode; kept
    /// across reloads).
    pub guard_share: Option<Arc<dyn crate::state::GuardShare>>,
    /// Data guard: the key of the accounts' hashes (kept across reloads while the same).
    pub guard_key: Arc<super::guard::GuardKey>,
    /// Data guard: hashing of record identifiers and fingerprints (random per start).
    pub guard_hashing: Arc<crate::guard::distinct::Hashing>,
    /// Data guard: each tenant's accounts, in `config.tenants` order (kept across reloads by
    /// id; a changed `max_accounts` applies to tenants added after).
    pub guard_books: Vec<Arc<super::guard::TenantBook>>,
    /// Per tenant and route, the slots of uploads streamed to the origin (routes with
    /// `stream_request_body`), apart from the pool's admission slots.
    pub upload_slots: Vec<Vec<Option<Arc<tokio::sync::Semaphore>>>>,
}

/// The request-body store of `config`: the previous generation's when its settings are the
/// same (bodies being read keep their accounting).
fn body_store(
    config: &Runtime,
    previous: Option<&Generation>,
    metrics: &Metrics,
) -> Arc<crate::proxy::buffer::BodyStore> {
    let b = &config.request_buffering;
    let settings = crate::proxy::buffer::StoreSettings {
        memory_per_body: b.per_body,
        memory_total: b.memory_total,
        disk_total: b.disk_total,
        dir: b.dir.clone(),
    };
    match previous {
        Some(p) if *p.bodies.settings() == settings => p.bodies.clone(),
        _ => crate::proxy::buffer::BodyStore::new(settings, metrics.request_bodies.clone()),
    }
}

/// The data guard's journal: the previous generation's while its path is the same, opened
/// when a route first has a guard (with what it held: the key, the suspensions).
fn guard_journal(
    config: &Runtime,
    previous: Option<&Generation>,
) -> (
    Option<Arc<crate::guard::journal::Journal>>,
    Option<crate::guard::journal::Loaded>,
) {
    if let Some(p) = previous {
        if p.guard_journal.is_some() && p.config.guard.database == config.guard.database {
            return (p.guard_journal.clone(), None);
        }
    }
    let guarded = config
        .tenants
        .iter()
        .any(|t| t.routes.iter().any(|r| r.guard.is_some()));
    if !guarded {
        return (None, None);
    }
    let path = &config.guard.database;
    match crate::guard::journal::Journal::open(
        path,
        crate::clock::unix_now_ms(),
        u64::from(config.guard.journal_days),
    ) {
        Ok((journal, loaded)) => (Some(Arc::new(journal)), Some(loaded)),
        Err(e) => {
            tracing::error!(target: "rempart::guard", error = %e, "cannot open the guard journal: accounts are counted in memory only, suspensions will not survive a restart");
            (None, None)
        }
    }
}

/// A random 64-bit seed.
fn ring_random_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// State a gateway's first generation starts from instead of fresh state (later ones carry
/// their predecessor's).
#[derive(Default)]
pub struct First {
    /// Node-local defence state (an upgrade's, with the previous process's keys).
    pub defence: Option<Arc<Defence>>,
    /// The ban store (a cluster node's, shared through Redis).
    pub bans: Option<Arc<dyn BanStore>>,
    /// The replay store (a cluster node's: answers used anywhere are refused here).
    pub replay: Option<Arc<dyn ReplayStore>>,
    /// Where the data guard tells what accounts took (a cluster node's).
    pub guard_share: Option<Arc<dyn crate::state::GuardShare>>,
}

/// A one-paragraph account of what a reload changed, for the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChangeSummary {
    /// Tenants added.
    pub tenants_added: Vec<String>,
    /// Tenants removed.
    pub tenants_removed: Vec<String>,
    /// Tenants whose settings changed.
    pub tenants_changed: Vec<String>,
    /// Whether listener addresses changed (needs a restart).
    pub listeners_changed: bool,
}

impl std::fmt::Display for ChangeSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tenants added [{}], removed [{}], changed [{}]{}",
            self.tenants_added.join(", "),
            self.tenants_removed.join(", "),
            self.tenants_changed.join(", "),
            if self.listeners_changed {
                "; listener changes need a restart"
            } else {
                ""
            }
        )
    }
}

/// Per-tenant handles in `config.tenants` order: the previous generation's for a tenant it
/// had (by id), a fresh one otherwise.
fn by_tenant<T: ?Sized>(
    config: &Runtime,
    previous: Option<&Generation>,
    old: impl Fn(&Generation) -> &Vec<Arc<T>>,
    fresh: impl Fn(&Tenant) -> Arc<T>,
) -> Vec<Arc<T>> {
    config
        .tenants
        .iter()
        .map(|t| {
            previous
                .and_then(|p| {
                    let i = p.config.tenants.iter().position(|pt| pt.id == t.id)?;
                    old(p).get(i).cloned()
                })
                .unwrap_or_else(|| fresh(t))
        })
        .collect()
}

fn pools(
    config: &Runtime,
    previous: Option<&Generation>,
    metrics: &Metrics,
) -> Vec<Vec<Arc<Pool>>> {
    config
        .tenants
        .iter()
        .map(|t| {
            t.pools
                .iter()
                .map(|spec| {
                    let prev = previous.and_then(|p| {
                        let ti = p.config.tenants.iter().position(|pt| pt.id == t.id)?;
                        p.pools[ti]
                            .iter()
                            .find(|pl| pl.spec.name == spec.name)
                            .map(Arc::as_ref)
                    });
                    Arc::new(Pool::build(&t.id, spec, prev, metrics))
                })
                .collect()
        })
        .collect()
}

fn stale_cache(config: &Runtime, previous: Option<&Generation>) -> Arc<StaleCache> {
    match previous {
        Some(p) if p.config.stale_cache == config.stale_cache => p.stale.clone(),
        _ => {
            let settings = &config.stale_cache;
            let disk = settings.disk_dir.as_ref().and_then(|dir| {
                crate::degraded::disk::DiskStore::open(dir, settings.disk_bytes)
                    .map_err(|e| tracing::error!(dir = %dir.display(), error = %e, "cannot use the stale-copy directory; copies stay in memory"))
                    .ok()
            });
            Arc::new(StaleCache::new(
                settings.memory_bytes,
                settings.entry_bytes,
                disk,
            ))
        }
    }
}

impl Generation {
    /// The certificate to present for `sni`: the tenant's files, or what the ACME authority
    /// gave it; else the default tenant's, else any.
    pub fn certificate_for(&self, sni: Option<&str>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let config = &self.config;
        let of = |i: usize| {
            let t = &config.tenants[i];
            if t.acme {
                self.acme.certificate(&t.id)
            } else {
                t.certificate.clone()
            }
        };
        let by_host = sni
            .map(str::to_ascii_lowercase)
            .and_then(|s| config.tenant_for_host(&s))
            .and_then(of);
        by_host
            .or_else(|| config.default_tenant.and_then(of))
            .or_else(|| (0..config.tenants.len()).find_map(of))
    }

    /// Whether the tenant can be served over HTTPS now (an ACME tenant once it has a
    /// certificate).
    pub fn serves_https(&self, tenant_idx: usize) -> bool {
        let t = &self.config.tenants[tenant_idx];
        !t.acme || self.acme.certificate(&t.id).is_some()
    }

    /// The certificates served now, files and ACME alike: (tenant, names, end, from ACME).
    pub fn served_certificates(&self) -> Vec<(String, Vec<String>, u64, bool)> {
        let acme = self.acme.facts();
        self.config
            .tenants
            .iter()
            .filter_map(|t| {
                let (facts, from_acme) = match &t.certificate_facts {
                    Some(f) => (f.clone(), false),
                    None => (acme.iter().find(|(id, _)| *id == t.id)?.1.clone(), true),
                };
                Some((t.id.clone(), facts.dns_names, facts.not_after, from_acme))
            })
            .collect()
    }

    /// Shows every tenant's certificate end of validity, files and ACME alike.
    pub fn export_certificates(&self, metrics: &Metrics) {
        let acme = self.acme.facts();
        metrics.set_certificates(
            self.config
                .tenants
                .iter()
                .filter_map(|t| {
                    t.certificate_facts
                        .as_ref()
                        .map(|facts| (t.id.as_str(), facts.not_after))
                })
                .chain(acme.iter().map(|(t, f)| (t.as_str(), f.not_after))),
        );
    }

    /// Builds the generation of `config`, carrying state over from `previous`.
    /// Without `previous`, the node-local defence state is `first.defence` (or fresh) and
    /// the bans `first.bans` (a cluster node's) or a list of this process's own.
    pub fn build(
        config: Runtime,
        previous: Option<&Generation>,
        first: First,
        metrics: &Metrics,
        access_log: bool,
        status: Arc<crate::status::StatusService>,
    ) -> Self {
        let route_counters = config
            .tenants
            .iter()
            .map(|t| {
                t.routes
                    .iter()
                    .map(|r| metrics.route_counters(&t.id, &r.name))
                    .collect()
            })
            .collect();
        let defence = previous.map_or_else(
            || first.defence.unwrap_or_else(|| Arc::new(Defence::new())),
            |p| p.defence.clone(),
        );
        let shield = match previous {
            Some(p) if p.config.prefixes == config.prefixes => p.shield.clone(),
            _ => Arc::new(
                crate::shield::Shield::with_keys(config.prefixes, defence.sketch_keys)
                    .aligned(crate::clock::unix_offset_ms()),
            ),
        };
        let keys: Arc<dyn PassKeys> = match config.pass_keys.clone() {
            Some(ring) => Arc::new(StaticKeys(ring)),
            // The node's random ring, read at each use: cluster mode swaps in the shared one.
            None => Arc::new(crate::state::local::NodeKeys(defence.clone())),
        };
        let (guard_journal, journal_loaded) = guard_journal(&config, previous);

        let stale_served = config
            .tenants
            .iter()
            .map(|t| {
                metrics
                    .stale_served
                    .get_or_create(&crate::metrics::TenantLabels {
                        tenant: t.id.clone(),
                    })
                    .clone()
            })
            .collect();
        let generation = Generation {
            tenant_keys: config
                .tenants
                .iter()
                .map(|t| TenantKey::of(&t.id))
                .collect(),
            pools: pools(&config, previous, metrics),
            route_counters,
            unrouted_counters: metrics.route_counters("-", "-"),
            client: ClientSettings {
                connect_timeout: config.timeouts.upstream_connect,
                max_idle_per_server: config.limits.upstream_idle_per_server,
            },
            access_log,
            retired: CancellationToken::new(),
            via: [
                headers::via_entry("1.1", &config.via_name),
                headers::via_entry("2", &config.via_name),
            ],
            shield,
            acme: previous.map_or_else(Arc::default, |p| p.acme.clone()),
            bans: previous.map_or_else(
                || {
                    first.bans.unwrap_or_else(|| {
                        Arc::new(crate::shield::bans::BanList::new()) as Arc<dyn BanStore>
                    })
                },
                |p| p.bans.clone(),
            ),
            replay: previous.map_or_else(
                || {
                    first
                        .replay
                        .unwrap_or_else(|| Arc::new(LocalReplay::default()) as Arc<dyn ReplayStore>)
                },
                |p| p.replay.clone(),
            ),
            keys,
            shield_counters: config
                .tenants
                .iter()
                .map(|t| metrics.shield_counters(&t.id))
                .collect(),
            defence,
            tenant_flags: by_tenant(
                &config,
                previous,
                |p| &p.tenant_flags,
                |t| Arc::new(TenantState::new(&t.id)) as Arc<dyn TenantFlags>,
            ),
            signals: by_tenant(
                &config,
                previous,
                |p| &p.signals,
                |_| Arc::new(TenantSignals::default()),
            ),
            gateway_signals: previous.map_or_else(Arc::default, |p| p.gateway_signals.clone()),
            status,
            stale: stale_cache(&config, previous),
            stale_served,
            bodies: body_store(&config, previous, metrics),
            guard_key: super::guard::GuardKey::choose(
                config.guard.key.as_ref(),
                journal_loaded.as_ref().map(|l| l.key.as_slice()),
                previous.map(|p| &p.guard_key),
            ),
            guard_journal,
            guard_share: previous.map_or(first.guard_share, |p| p.guard_share.clone()),
            guard_hashing: previous.map_or_else(
                || Arc::new(crate::guard::distinct::Hashing::new(ring_random_u64())),
                |p| p.guard_hashing.clone(),
            ),
            guard_books: by_tenant(
                &config,
                previous,
                |p| &p.guard_books,
                |t| {
                    Arc::new(super::guard::TenantBook::new(
                        &t.id,
                        config.guard.max_accounts,
                        metrics,
                    ))
                },
            ),
            upload_slots: config
                .tenants
                .iter()
                .map(|t| {
                    t.routes
                        .iter()
                        .map(|r| {
                            r.streaming_uploads
                                .map(|n| Arc::new(tokio::sync::Semaphore::new(n as usize)))
                        })
                        .collect()
                })
                .collect(),
            config: Arc::new(config),
        };
        for (t, book) in generation
            .config
            .tenants
            .iter()
            .zip(&generation.guard_books)
        {
            book.lock().set_baseline(t.guard.baseline);
        }
        if let Some(loaded) = journal_loaded {
            // Suspensions outlive restarts.
            for (tenant, account) in loaded.suspended {
                if let Some(i) = generation.tenant_index(&tenant) {
                    generation.guard_books[i].lock().suspend(account);
                }
            }
        }
        generation
    }

    /// Starts this generation's health checks (they stop when it is retired).
    pub fn spawn_health_checks(&self) {
        let pools = self
            .pools
            .iter()
            .zip(&self.config.tenants)
            .flat_map(|(pools, tenant)| {
                let host = tenant.hosts.first().cloned().unwrap_or_default();
                pools.iter().map(move |p| (p.clone(), host.clone()))
            })
            .collect();
        crate::proxy::health::spawn(pools, self.client, self.retired.clone());
    }

    /// The index of tenant `id`.
    pub fn tenant_index(&self, id: &str) -> Option<usize> {
        self.config.tenants.iter().position(|t| t.id == id)
    }

    /// The id of the tenant with stable key `key`.
    pub fn tenant_id_of(&self, key: TenantKey) -> Option<&str> {
        let i = self.tenant_keys.iter().position(|k| *k == key)?;
        Some(self.config.tenants[i].id.as_str())
    }
}

/// What a reload changes, for the log.
pub fn summarize(old: &Runtime, new: &Runtime) -> ChangeSummary {
    let mut s = ChangeSummary::default();
    for t in &new.tenants {
        match old.tenants.iter().find(|o| o.id == t.id) {
            None => s.tenants_added.push(t.id.clone()),
            Some(o) => {
                if o.hosts != t.hosts
                    || o.pools != t.pools
                    || o.routes != t.routes
                    || o.name != t.name
                    || o.contact != t.contact
                {
                    s.tenants_changed.push(t.id.clone());
                }
            }
        }
    }
    for o in &old.tenants {
        if !new.tenants.iter().any(|t| t.id == o.id) {
            s.tenants_removed.push(o.id.clone());
        }
    }
    s.listeners_changed = old.listeners != new.listeners || old.admin.address != new.admin.address;
    s
}

#[cfg(test)]
mod tests {
    use crate::pipeline::{test_gateway, test_tenant};
    use crate::shield::Decision;

    #[tokio::test]
    async fn shield_counts_follow_the_tenant_across_a_reordering_reload() {
        let limited = "[tenants.shield]\naddress_rate = 5\n";
        let ville = test_tenant("ville", "ville.test", limited);
        let agglo = test_tenant("agglo", "agglo.test", limited);
        let gw = test_gateway(&format!("{ville}\n{agglo}"));
        let ip = "192.0.2.7".parse().unwrap();
        let check = |g: &super::Generation, id: &str, now: u64| {
            let i = g.tenant_index(id).unwrap();
            let policy = &g.config.tenants[i].shield;
            g.shield.check(
                policy,
                g.tenant_keys[i],
                crate::shield::Client::unverified(ip),
                "/",
                1,
                now,
            )
        };
        let before = gw.current();
        for n in 0..5 {
            assert_eq!(check(&before, "ville", 1_000 + n), Decision::Allow);
        }
        // The same tenants in the other order: indexes change, keys do not.
        let reordered = crate::config::load_str(
            &format!("[[listeners]]\naddress = \"127.0.0.1:0\"\n{agglo}\n{ville}"),
            std::path::Path::new("test.toml"),
        )
        .unwrap();
        gw.apply(reordered);
        let after = gw.current();
        assert_ne!(before.tenant_index("ville"), after.tenant_index("ville"));
        assert!(
            matches!(check(&after, "ville", 1_010), Decision::Limited { .. }),
            "ville's count carried over"
        );
        assert_eq!(
            check(&after, "agglo", 1_010),
            Decision::Allow,
            "agglo's is its own"
        );
        let i = after.tenant_index("ville").unwrap();
        assert_eq!(after.tenant_id_of(after.tenant_keys[i]), Some("ville"));
    }
}
