//! Certificates from an ACME authority (RFC 8555, instant-acme) for the tenants with
//! `tls = { acme = true }`: the account and each tenant's certificate kept in the state
//! directory (owner-only), HTTP-01 answered by the gateway itself, renewal at two thirds of
//! the lifetime or earlier when the authority's renewal information (ARI, RFC 9773) says so,
//! back-off on failure while the old certificate keeps serving. Start-up never
//! waits for the authority: a tenant without a certificate yet is served over HTTP.
//!
//! `Acme` is the state the request path reads (challenge answers, certificates); `renew` is
//! one pass over the tenants, driven by the wiring (`app`) on a timer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::sign::CertifiedKey;

use crate::config::certificate::CertificateFacts;
use crate::config::runtime::{AcmeChallenge, AcmeSettings};

/// First wait after a failed attempt; doubled after each failure, up to `BACKOFF_MAX`.
const BACKOFF_FIRST: Duration = Duration::from_secs(30);
/// Longest wait between two attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(6 * 3600);
/// Bounds of the wait before asking the renewal information again (the authority's
/// `Retry-After`, kept within these).
const ARI_ASK_MIN: u64 = 60;
const ARI_ASK_MAX: u64 = 24 * 3600;

/// What the authority's renewal information said of a tenant's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ari {
    /// The certificate asked about (`CertificateFacts::ari_id`).
    id: String,
    /// When to renew (Unix s): a point drawn in the suggested window, once asked.
    renew_at: Option<u64>,
    /// When to ask again (Unix s).
    ask_at: u64,
}

/// A tenant's certificate and what the operator needs to know of it.
#[derive(Clone)]
pub struct Obtained {
    /// What TLS serves.
    pub key: Arc<CertifiedKey>,
    /// Validity and names.
    pub facts: CertificateFacts,
}

/// A proof the authority checks, as the nodes of a cluster share it (any node may be the
/// one the authority reaches).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Proof {
    /// HTTP-01: the answer for a token.
    Http {
        /// The token.
        token: String,
        /// Its key authorization.
        key_authorization: String,
    },
    /// TLS-ALPN-01: the certificate for a host name, made from the key authorization.
    TlsAlpn {
        /// The host name.
        host: String,
        /// The key authorization.
        key_authorization: String,
    },
}

impl Proof {
    /// What names this proof among the others (the nodes confirm they hold it by it).
    pub fn id(&self) -> String {
        match self {
            Self::Http { token, .. } => format!("http {token}"),
            Self::TlsAlpn {
                host,
                key_authorization,
            } => format!("tls-alpn {host} {key_authorization}"),
        }
    }
}

/// How long an order waits for the other nodes to confirm they answer its proof before it
/// asks the authority to check anyway.
pub const PROOF_SPREAD: std::time::Duration = std::time::Duration::from_secs(10);

/// Cluster mode's side of the renewals: one node orders (it holds the cluster's renewal
/// lease), every node answers the authority's checks and serves what it obtained.
pub trait Shared: Send + Sync {
    /// A proof is expected (`active`) or no longer.
    fn proof(&self, proof: &Proof, active: bool);
    /// Resolves once every node in reach answers the active `proof` (true), or after
    /// `within` (false): the authority may check any of them, at once.
    fn proof_spread(
        &self,
        proof: &Proof,
        within: std::time::Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;
    /// A certificate was obtained for `tenant` (PEM chain and key).
    fn certificate(&self, tenant: &str, chain: &str, key: &str);
    /// Whether this node may order now: it holds the renewal lease, or it has not reached
    /// the others for longer than a lease lasts and the matter is `urgent` (no certificate,
    /// or one ending within a week).
    fn may_order(&self, urgent: bool) -> bool;
}

/// What the request path reads, and the renewals write.
#[derive(Default)]
pub struct Acme {
    /// HTTP-01: token -> key authorization, while an order waits for validation.
    challenges: Mutex<HashMap<String, String>>,
    /// TLS-ALPN-01: host name -> the certificate proving it, while an order waits.
    alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// Certificates by tenant id.
    certificates: RwLock<HashMap<String, Obtained>>,
    /// Per tenant: failed attempts in a row, and the time (Unix s) before which not to try.
    backoff: Mutex<HashMap<String, (u32, u64)>>,
    /// Per tenant: the renewal information of its certificate.
    ari: Mutex<HashMap<String, Ari>>,
    /// The authority's directory has no renewal information (asked once per process).
    ari_unsupported: AtomicBool,
    /// Cluster mode.
    shared: std::sync::OnceLock<Arc<dyn Shared>>,
    /// Wakes the renewals (a reload may have added a tenant).
    pub wake: tokio::sync::Notify,
    /// Times an operator asked to try again (`retry_now`).
    retries: AtomicU64,
    /// Per tenant: why its last attempt failed (cleared when one succeeds).
    last_failures: Mutex<HashMap<String, String>>,
}

impl Acme {
    /// Cluster mode: shares proofs and certificates through `shared`, and orders only when
    /// it allows.
    pub fn share_with(&self, shared: Arc<dyn Shared>) {
        let _ = self.shared.set(shared);
    }

    /// Another node's proof: answered here too while `active`.
    pub fn take_proof(&self, proof: &Proof, active: bool) {
        match proof {
            Proof::Http {
                token,
                key_authorization,
            } => {
                let mut challenges = self
                    .challenges
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if active {
                    challenges.insert(token.clone(), key_authorization.clone());
                } else {
                    challenges.remove(token);
                }
            }
            Proof::TlsAlpn {
                host,
                key_authorization,
            } => {
                let mut alpn = self
                    .alpn
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if !active {
                    alpn.remove(host);
                    return;
                }
                let digest =
                    ring::digest::digest(&ring::digest::SHA256, key_authorization.as_bytes());
                match alpn_certificate(host, digest.as_ref()) {
                    Ok(proof) => {
                        alpn.insert(host.clone(), Arc::new(proof));
                    }
                    Err(e) => {
                        tracing::warn!(target: "rempart::acme", host, error = %e, "another node's TLS-ALPN-01 proof cannot be made here");
                    }
                }
            }
        }
    }

    /// Another node's certificate for `tenant` (covering `hosts`): written to `dir` and
    /// served, unless the one served ends later. `Ok(true)` when taken.
    pub fn take_certificate(
        &self,
        tenant: &str,
        hosts: &[String],
        dir: &Path,
        chain: &str,
        key: &str,
    ) -> Result<bool, String> {
        let key_pair = crate::config::validate::certified_key_from_pem(chain, key)?;
        let facts = CertificateFacts::read(
            key_pair
                .end_entity_cert()
                .map_err(|e| e.to_string())?
                .as_ref(),
        )?;
        if !hosts.iter().all(|h| facts.covers(h)) {
            return Err("it does not cover the tenant's host names".into());
        }
        if self
            .facts_of(tenant)
            .is_some_and(|f| f.not_after >= facts.not_after)
        {
            return Ok(false);
        }
        let obtained = store_and_load(dir, chain, key, hosts)?;
        self.install(tenant, obtained);
        Ok(true)
    }

    /// The key authorization to answer for `token`, while an order waits for it.
    pub fn challenge_answer(&self, token: &str) -> Option<String> {
        self.challenges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(token)
            .cloned()
    }

    /// The TLS-ALPN-01 certificate to present for `host` in an `acme-tls/1` handshake,
    /// while an order waits for it.
    pub fn alpn_certificate(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        self.alpn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(host)
            .cloned()
    }

    /// The tenant's certificate, once obtained.
    pub fn certificate(&self, tenant: &str) -> Option<Arc<CertifiedKey>> {
        self.certificates
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(tenant)
            .map(|o| o.key.clone())
    }

    /// Records how `tenant`'s last attempt ended: `Some(why)` when it failed.
    pub fn note_outcome(&self, tenant: &str, failure: Option<String>) {
        let mut last = self
            .last_failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match failure {
            Some(why) => last.insert(tenant.to_owned(), why),
            None => last.remove(tenant),
        };
    }

    /// Why `tenant`'s last attempt failed, if it did.
    pub fn last_failure(&self, tenant: &str) -> Option<String> {
        self.last_failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(tenant)
            .cloned()
    }

    /// Tries again at once, without the back-off of earlier failures (after a reload: the
    /// operator may have fixed what failed), and wakes the renewals.
    pub fn retry_now(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        self.backoff
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        // And asks the renewal information again.
        for ari in self
            .ari
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values_mut()
        {
            ari.ask_at = 0;
        }
        self.wake.notify_one();
    }

    /// Each tenant's certificate facts (expiry metric).
    pub fn facts(&self) -> Vec<(String, CertificateFacts)> {
        self.certificates
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(t, o)| (t.clone(), o.facts.clone()))
            .collect()
    }

    fn install(&self, tenant: &str, obtained: Obtained) {
        self.certificates
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(tenant.to_owned(), obtained);
    }

    fn facts_of(&self, tenant: &str) -> Option<CertificateFacts> {
        self.certificates
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(tenant)
            .map(|o| o.facts.clone())
    }
}

impl Acme {
    /// The renewal information known for `tenant`'s certificate `facts`: when to renew
    /// (if the authority said) and whether to ask now. A new certificate starts unasked.
    fn ari_plan(&self, tenant: &str, facts: &CertificateFacts, now: u64) -> (Option<u64>, bool) {
        let Some(id) = facts.ari_id.as_ref() else {
            return (None, false);
        };
        if self.ari_unsupported.load(Ordering::Relaxed) {
            return (None, false);
        }
        let mut ari = self
            .ari
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let known = ari.entry(tenant.to_owned()).or_insert_with(|| Ari {
            id: id.clone(),
            renew_at: None,
            ask_at: 0,
        });
        if &known.id != id {
            *known = Ari {
                id: id.clone(),
                renew_at: None,
                ask_at: 0,
            };
        }
        (known.renew_at, known.ask_at <= now)
    }

    fn ari_answer(&self, tenant: &str, id: &str, renew_at: Option<u64>, ask_at: u64) {
        let mut ari = self
            .ari
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(known) = ari.get_mut(tenant).filter(|k| k.id == id) {
            known.renew_at = renew_at.or(known.renew_at);
            known.ask_at = ask_at;
        }
    }

    /// Whether renewal information was had for this certificate (the order then says which
    /// certificate it replaces).
    fn ari_known(&self, tenant: &str, id: &str) -> bool {
        self.ari
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(tenant)
            .is_some_and(|k| k.id == id && k.renew_at.is_some())
    }
}

/// Asks the authority's renewal information for `id` (RFC 9773): when to renew (a point
/// drawn at random in the suggested window, now if the window has begun) and when to ask
/// again. `Err(None)`: the authority gives none.
async fn ask_renewal_info(
    account: &Account,
    id: &str,
    now: u64,
) -> Result<(u64, u64), Option<String>> {
    let (aki, serial) = id.split_once('.').ok_or(None)?;
    let certificate = CertificateIdentifier {
        authority_key_identifier: aki.into(),
        serial: serial.into(),
    };
    let (info, retry_after) = account
        .renewal_info(&certificate)
        .await
        .map_err(|e| match e {
            instant_acme::Error::Unsupported(_) => None,
            other => Some(other.to_string()),
        })?;
    let unix = |t: i64| u64::try_from(t).unwrap_or(0);
    let start = unix(info.suggested_window.start.unix_timestamp());
    let end = unix(info.suggested_window.end.unix_timestamp()).max(start);
    let at = if start <= now {
        now
    } else {
        start + random_below(end - start + 1)
    };
    let ask = now + retry_after.as_secs().clamp(ARI_ASK_MIN, ARI_ASK_MAX);
    Ok((at, ask))
}

/// A random number below `n` (`n` > 0).
fn random_below(n: u64) -> u64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    u64::from_le_bytes(bytes) % n.max(1)
}

/// When a certificate is due for renewal: two thirds into its lifetime (30 days before the
/// end of a 90-day certificate).
pub fn renew_at(facts: &CertificateFacts) -> u64 {
    let lifetime = facts.not_after.saturating_sub(facts.not_before);
    facts.not_before + lifetime / 3 * 2
}

/// A tenant to keep a certificate for: its id and exact host names.
pub struct Wanted {
    /// Tenant id.
    pub tenant: String,
    /// Host names the certificate must cover (wildcards cannot be validated over HTTP-01).
    pub hosts: Vec<String>,
}

/// What one pass ordered, per tenant: `Ok` a new certificate, `Err` why not (the old
/// certificate, if any, keeps serving). Tenants with nothing due are not listed.
pub type Outcome = (String, Result<(), String>);

/// One pass: loads stored certificates not loaded yet, orders those missing or due (and
/// not backing off). Returns what it did and the time (Unix s) of the next pass.
pub async fn renew(
    acme: &Acme,
    settings: &AcmeSettings,
    wanted: &[Wanted],
    now: u64,
) -> (Vec<Outcome>, u64) {
    let mut outcomes = Vec::new();
    let mut account: Option<Account> = None;
    let mut next = now + 3600;
    let retries = acme.retries.load(Ordering::Relaxed);
    for want in wanted {
        let dir = settings.state_dir.join(&want.tenant);
        if acme.facts_of(&want.tenant).is_none() {
            if let Some(stored) = load_stored(&dir, &want.hosts) {
                acme.install(&want.tenant, stored);
            }
        }
        let facts = acme.facts_of(&want.tenant);
        // Cluster mode: one node orders for all (the lease holder), unless the others are out
        // of reach and the certificate is missing or ends within a week.
        if let Some(shared) = acme.shared.get() {
            let urgent = facts
                .as_ref()
                .is_none_or(|f| f.not_after <= now + 7 * 86_400);
            if !shared.may_order(urgent) {
                next = next.min(now + 10);
                continue;
            }
        }
        let (ari_renew_at, ask_ari) = facts
            .as_ref()
            .map_or((None, false), |f| acme.ari_plan(&want.tenant, f, now));
        let mut due = facts
            .as_ref()
            .map_or(now, renew_at)
            .min(ari_renew_at.unwrap_or(u64::MAX));
        if let (true, Some(id)) = (
            ask_ari && due > now,
            facts.as_ref().and_then(|f| f.ari_id.clone()),
        ) {
            if account.is_none() {
                account = account_for(settings).await.ok();
            }
            if let Some(a) = account.as_ref() {
                match ask_renewal_info(a, &id, now).await {
                    Ok((at, ask)) => {
                        if at < due {
                            tracing::info!(target: "rempart::acme", tenant = %want.tenant, in_s = at.saturating_sub(now), "the authority's renewal information moves the renewal earlier");
                        }
                        acme.ari_answer(&want.tenant, &id, Some(at), ask);
                        due = due.min(at);
                        next = next.min(ask);
                    }
                    Err(None) => {
                        if !acme.ari_unsupported.swap(true, Ordering::Relaxed) {
                            tracing::info!(target: "rempart::acme", "the authority gives no renewal information (ARI): renewals at two thirds of the lifetime");
                        }
                    }
                    Err(Some(e)) => {
                        tracing::warn!(target: "rempart::acme", tenant = %want.tenant, error = %e, "the authority's renewal information cannot be read; asking again in an hour");
                        acme.ari_answer(&want.tenant, &id, None, now + 3600);
                        next = next.min(now + 3600);
                    }
                }
            } else {
                acme.ari_answer(&want.tenant, &id, None, now + ARI_ASK_MIN);
                next = next.min(now + ARI_ASK_MIN);
            }
        }
        let (failures, not_before) = acme
            .backoff
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&want.tenant)
            .copied()
            .unwrap_or((0, 0));
        if due > now || not_before > now {
            next = next.min(due.max(not_before));
            continue;
        }
        if account.is_none() {
            match account_for(settings).await {
                Ok(a) => account = Some(a),
                Err(e) => {
                    outcomes.push((want.tenant.clone(), Err(e)));
                    next = next.min(back_off(acme, &want.tenant, failures, now, retries));
                    continue;
                }
            }
        }
        let Some(account) = account.as_ref() else {
            continue;
        };
        // A renewal the authority's information allowed says which certificate it replaces.
        let replaces = facts
            .as_ref()
            .and_then(|f| f.ari_id.clone())
            .filter(|id| acme.ari_known(&want.tenant, id));
        let mut ordered = order(
            acme,
            account,
            &want.hosts,
            settings.challenge,
            replaces.as_deref(),
        )
        .await;
        if let (Err(e), Some(_)) = (&ordered, &replaces) {
            // An authority may refuse (or not echo) the certificate an order replaces: the
            // renewal matters more than the hint.
            tracing::info!(target: "rempart::acme", tenant = %want.tenant, error = %e, "the order naming the certificate it replaces was not taken; ordering without");
            ordered = order(acme, account, &want.hosts, settings.challenge, None).await;
        }
        match ordered {
            Ok((chain, key)) => match store_and_load(&dir, &chain, &key, &want.hosts) {
                Ok(obtained) => {
                    if let Some(shared) = acme.shared.get() {
                        shared.certificate(&want.tenant, &chain, &key);
                    }
                    // With renewal information, the new certificate's is asked at once.
                    let ask_soon = obtained.facts.ari_id.is_some()
                        && !acme.ari_unsupported.load(Ordering::Relaxed);
                    next = next.min(if ask_soon {
                        now
                    } else {
                        renew_at(&obtained.facts)
                    });
                    acme.install(&want.tenant, obtained);
                    acme.backoff
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .remove(&want.tenant);
                    outcomes.push((want.tenant.clone(), Ok(())));
                }
                Err(e) => {
                    next = next.min(back_off(acme, &want.tenant, failures, now, retries));
                    outcomes.push((want.tenant.clone(), Err(e)));
                }
            },
            Err(e) => {
                next = next.min(back_off(acme, &want.tenant, failures, now, retries));
                outcomes.push((want.tenant.clone(), Err(e)));
            }
        }
    }
    (outcomes, next)
}

/// Records one more failure; the time of the next attempt.
/// An attempt that began before the operator asked to try again (`retries` differs) does
/// not hold back the attempt asked for: it is made at once.
fn back_off(acme: &Acme, tenant: &str, failures: u32, now: u64, retries: u64) -> u64 {
    let wait = BACKOFF_FIRST
        .saturating_mul(1u32 << failures.min(16))
        .min(BACKOFF_MAX);
    let asked_since = acme.retries.load(Ordering::Relaxed) != retries;
    let at = if asked_since {
        now
    } else {
        now + wait.as_secs()
    };
    acme.backoff
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(tenant.to_owned(), (failures + 1, at));
    at
}

/// A certificate stored by an earlier run, if it still covers `hosts`.
fn load_stored(dir: &Path, hosts: &[String]) -> Option<Obtained> {
    let key =
        crate::config::validate::load_certified_key(&dir.join("cert.pem"), &dir.join("key.pem"))
            .ok()?;
    let facts = CertificateFacts::read(key.end_entity_cert().ok()?.as_ref()).ok()?;
    hosts.iter().all(|h| facts.covers(h)).then(|| Obtained {
        key: Arc::new(key),
        facts,
    })
}

/// Writes the chain and key (owner-only, replaced atomically) and loads them.
fn store_and_load(
    dir: &Path,
    chain: &str,
    key: &str,
    hosts: &[String],
) -> Result<Obtained, String> {
    write_private(dir, "key.pem", key.as_bytes())?;
    write_private(dir, "cert.pem", chain.as_bytes())?;
    load_stored(dir, hosts).ok_or_else(|| {
        "the authority's certificate cannot be read or does not cover the tenant's hosts".into()
    })
}

/// Writes `name` in `dir` (made owner-only when absent) through a temporary file.
fn write_private(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
    let tmp: PathBuf = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(name)).map_err(|e| format!("cannot write {name}: {e}"))
}

/// The account: the stored credentials, or a new account (then stored).
async fn account_for(settings: &AcmeSettings) -> Result<Account, String> {
    let path = settings.state_dir.join("account.json");
    let http = Box::new(Client::new(&settings.ca_roots)?);
    if let Ok(text) = std::fs::read(&path) {
        let credentials: AccountCredentials = serde_json::from_slice(&text)
            .map_err(|e| format!("{} cannot be read: {e}", path.display()))?;
        return Account::builder_with_http(http)
            .from_credentials(credentials)
            .await
            .map_err(|e| format!("the ACME account cannot be restored: {e}"));
    }
    let contact: Vec<&str> = settings.contact.iter().map(String::as_str).collect();
    let (account, credentials) = Account::builder_with_http(http)
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory.clone(),
            None,
        )
        .await
        .map_err(|e| format!("no ACME account from {}: {e}", settings.directory))?;
    let text = serde_json::to_vec(&credentials).map_err(|e| e.to_string())?;
    write_private(&settings.state_dir, "account.json", &text)?;
    tracing::info!(target: "rempart::acme", directory = %settings.directory, "ACME account made");
    Ok(account)
}

/// One order for `hosts`, each proved with `challenge`: the chain and the private key (PEM).
async fn order(
    acme: &Acme,
    account: &Account,
    hosts: &[String],
    challenge: AcmeChallenge,
    replaces: Option<&str>,
) -> Result<(String, String), String> {
    let identifiers: Vec<Identifier> = hosts.iter().map(|h| Identifier::Dns(h.clone())).collect();
    let mut new_order = NewOrder::new(&identifiers);
    if let Some((aki, serial)) = replaces.and_then(|id| id.split_once('.')) {
        new_order = new_order.replaces(CertificateIdentifier {
            authority_key_identifier: aki.into(),
            serial: serial.into(),
        });
    }
    let mut order = account
        .new_order(&new_order)
        .await
        .map_err(|e| format!("the order was refused: {e}"))?;
    let mut tokens = Vec::new();
    let mut proved_hosts = Vec::new();
    let result = async {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| format!("authorization: {e}"))?;
            let mut published = None;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(format!("authorization is {other:?}")),
            }
            let kind = match challenge {
                AcmeChallenge::Http01 => ChallengeType::Http01,
                AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            };
            let mut offered = authz
                .challenge(kind.clone())
                .ok_or_else(|| format!("the authority offers no {kind:?} challenge"))?;
            let key_authorization = offered.key_authorization();
            match challenge {
                AcmeChallenge::Http01 => {
                    let token = offered.token.clone();
                    acme.challenges
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(token.clone(), key_authorization.as_str().to_owned());
                    if let Some(shared) = acme.shared.get() {
                        let proof = Proof::Http {
                            token: token.clone(),
                            key_authorization: key_authorization.as_str().to_owned(),
                        };
                        shared.proof(&proof, true);
                        published = Some((shared.clone(), proof));
                    }
                    tokens.push((token, key_authorization.as_str().to_owned()));
                }
                AcmeChallenge::TlsAlpn01 => {
                    let Identifier::Dns(host) = offered.identifier().identifier.clone() else {
                        return Err("the authority asks to prove something else than a name".into());
                    };
                    let proof = alpn_certificate(&host, key_authorization.digest().as_ref())?;
                    acme.alpn
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(host.clone(), Arc::new(proof));
                    if let Some(shared) = acme.shared.get() {
                        let proof = Proof::TlsAlpn {
                            host: host.clone(),
                            key_authorization: key_authorization.as_str().to_owned(),
                        };
                        shared.proof(&proof, true);
                        published = Some((shared.clone(), proof));
                    }
                    proved_hosts.push((host, key_authorization.as_str().to_owned()));
                }
            }
            // The authority may reach any node: each must answer before it is asked to check.
            if let Some((shared, proof)) = published {
                if !shared.proof_spread(&proof, PROOF_SPREAD).await {
                    tracing::warn!(target: "rempart::acme", "not every node confirmed it answers the proof; asking the authority to check anyway");
                }
            }
            offered
                .set_ready()
                .await
                .map_err(|e| format!("challenge: {e}"))?;
        }
        let status = order
            .poll_ready(&RetryPolicy::default())
            .await
            .map_err(|e| format!("validation: {e}"))?;
        if status != OrderStatus::Ready {
            return Err(format!(
                "validation failed ({status:?}): the authority could not fetch /.well-known/acme-challenge/ from this gateway on port 80"
            ));
        }
        let key = order.finalize().await.map_err(|e| format!("finalize: {e}"))?;
        let chain = order
            .poll_certificate(&RetryPolicy::default())
            .await
            .map_err(|e| format!("certificate: {e}"))?;
        Ok((chain, key))
    }
    .await;
    let mut challenges = acme
        .challenges
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (token, _) in &tokens {
        challenges.remove(token);
    }
    drop(challenges);
    let mut alpn = acme
        .alpn
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (host, _) in &proved_hosts {
        alpn.remove(host);
    }
    drop(alpn);
    if let Some(shared) = acme.shared.get() {
        for (token, key_authorization) in tokens {
            shared.proof(
                &Proof::Http {
                    token,
                    key_authorization,
                },
                false,
            );
        }
        for (host, key_authorization) in proved_hosts {
            shared.proof(
                &Proof::TlsAlpn {
                    host,
                    key_authorization,
                },
                false,
            );
        }
    }
    result
}

/// The self-signed certificate of a TLS-ALPN-01 proof for `host` (RFC 8737): the host as its
/// only name, the SHA-256 of the key authorization in its critical acmeIdentifier extension.
fn alpn_certificate(host: &str, digest: &[u8]) -> Result<CertifiedKey, String> {
    let fail = |e: rcgen_acme::Error| format!("the TLS-ALPN-01 certificate: {e}");
    let mut params = rcgen_acme::CertificateParams::new(vec![host.to_owned()]).map_err(fail)?;
    params.custom_extensions = vec![rcgen_acme::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen_acme::KeyPair::generate().map_err(fail)?;
    let cert = params.self_signed(&key).map_err(fail)?;
    let private = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signing = rustls::crypto::ring::sign::any_supported_type(&private)
        .map_err(|e| format!("the TLS-ALPN-01 key: {e}"))?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signing))
}

/// The HTTP client of the ACME exchanges: rustls (ring) trusting the system's roots and the
/// configured extra ones.
struct Client(
    hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        instant_acme::BodyWrapper<Bytes>,
    >,
);

impl Client {
    fn new(extra_roots: &[rustls_pki_types::CertificateDer<'static>]) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        for root in extra_roots {
            roots
                .add(root.clone())
                .map_err(|e| format!("acme.ca_file: {e}"))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        Ok(Self(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector),
        ))
    }
}

impl instant_acme::HttpClient for Client {
    fn request(
        &self,
        req: http::Request<instant_acme::BodyWrapper<Bytes>>,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<instant_acme::BytesResponse, instant_acme::Error>,
                > + Send,
        >,
    > {
        let sent = self.0.request(req);
        Box::pin(async move {
            let response = tokio::time::timeout(Duration::from_secs(30), sent)
                .await
                .map_err(|_| {
                    instant_acme::Error::Str("the ACME authority did not answer within 30 s")
                })?
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            // Read whole here: the authority's answers are small JSON documents or PEM.
            let (parts, body) = response.into_parts();
            let bytes = tokio::time::timeout(Duration::from_secs(30), body.collect())
                .await
                .map_err(|_| instant_acme::Error::Str("the ACME authority's answer stalled"))?
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?
                .to_bytes();
            Ok(instant_acme::BytesResponse::from(
                http::Response::from_parts(parts, http_body_util::Full::new(bytes)),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_backs_off_unless_a_retry_was_asked_for_meanwhile() {
        let acme = Acme::default();
        let pass = acme.retries.load(Ordering::Relaxed);
        // Failures in a row wait twice as long each time.
        assert_eq!(back_off(&acme, "ville", 0, 1_000, pass), 1_030);
        assert_eq!(back_off(&acme, "ville", 1, 1_000, pass), 1_060);
        // An operator's reload asks to try again while an attempt begun before it fails:
        // that failure does not hold back the attempt asked for.
        acme.retry_now();
        assert_eq!(back_off(&acme, "ville", 0, 2_000, pass), 2_000);
        // The attempt asked for fails in turn: it backs off as usual.
        let pass = acme.retries.load(Ordering::Relaxed);
        assert_eq!(back_off(&acme, "ville", 1, 2_000, pass), 2_060);
    }
}
