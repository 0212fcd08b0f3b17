//! Phase 2b, the data guard, on routes with a `guard` table: who is asking (the tenant's
//! account sources; without one, the client's prefix stands for it) and the account's
//! standing: suspended (403), over a `block` budget (403), over a `slow` budget (each answer
//! delayed). Then `GuardTap`, on the answer's body, counts the records it carries, masks or
//! cuts the personal data the route says, and tells the tenant's book when the body ends
//! (or is cut short: what was sent was taken), which may cross a budget for the next
//! requests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::context::RequestCtx;
use super::flow::Flow;
use super::taps::{Cut, ResponseTap, TapFlow};
use crate::config::runtime::Route;
use crate::error::ProxyError;
use crate::guard::account::{self, AccountId, Identity};
use crate::guard::answer::{AnswerScan, Step};
use crate::guard::book::{Book, Visit, Who};
use crate::guard::budget::{Action, Verdict};
use crate::guard::journal::{self, Journal};
use crate::guard::policy::RouteGuard;
use crate::guard::scan::Kind;
use crate::metrics::{GuardActionLabels, Metrics, PiiLabels, RouteLabels};
use crate::proxy::fields::OriginFields;

/// The key of the accounts' hashes: the configured one, else the one the journal keeps,
/// else a random one made at start (kept across reloads while nothing better comes).
pub struct GuardKey {
    /// Where it came from.
    origin: KeyOrigin,
    /// The HMAC key.
    pub key: ring::hmac::Key,
}

#[derive(PartialEq, Eq)]
enum KeyOrigin {
    Configured(Arc<[u8]>),
    Journal,
    Random,
}

impl GuardKey {
    /// The key for `configured` (the configuration's), or `journal` (the key the journal
    /// keeps, when it was just opened): the previous one when nothing changes.
    pub fn choose(
        configured: Option<&Arc<[u8]>>,
        journal: Option<&[u8]>,
        previous: Option<&Arc<GuardKey>>,
    ) -> Arc<Self> {
        let hmac = |bytes: &[u8]| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes);
        if let Some(k) = configured {
            let origin = KeyOrigin::Configured(k.clone());
            if let Some(p) = previous.filter(|p| p.origin == origin) {
                return p.clone();
            }
            return Arc::new(Self {
                origin,
                key: hmac(k),
            });
        }
        if let Some(k) = journal {
            return Arc::new(Self {
                origin: KeyOrigin::Journal,
                key: hmac(k),
            });
        }
        if let Some(p) = previous.filter(|p| !matches!(p.origin, KeyOrigin::Configured(_))) {
            return p.clone();
        }
        let mut bytes = [0u8; 32];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
        Arc::new(Self {
            origin: KeyOrigin::Random,
            key: hmac(&bytes),
        })
    }
}

/// One tenant's guard state: its accounts, and the metric families the guard counts in
/// (kept across reloads by tenant id).
pub struct TenantBook {
    /// Tenant id (metric labels, logs).
    pub tenant: String,
    /// The accounts.
    pub book: Mutex<Book>,
    records: Family<RouteLabels, Counter>,
    pii: Family<PiiLabels, Counter>,
    actions: Family<GuardActionLabels, Counter>,
    /// The action counters, resolved once (`ACTIONS` order).
    action_counters: [std::sync::OnceLock<Counter>; ACTIONS.len()],
    /// Each route's counters, resolved once per route name.
    route_counters: Mutex<std::collections::HashMap<Box<str>, Arc<RouteCounters>>>,
}

/// The actions counted in `rempart_guard_actions_total`.
const ACTIONS: [&str; 13] = [
    "log",
    "alert",
    "slow",
    "block",
    "suspend",
    "refused_quota",
    "refused_suspended",
    "cut",
    "two_places",
    "new_fingerprint",
    "above_usual",
    "above_peers",
    "outside_hours",
];

/// A guarded route's counters: records, and personal-data items per kind.
pub struct RouteCounters {
    records: Counter,
    pii: [Counter; Kind::COUNT],
}

impl TenantBook {
    /// The book of tenant `id`, tracking at most `capacity` accounts.
    pub fn new(id: &str, capacity: usize, metrics: &Metrics) -> Self {
        Self {
            tenant: id.to_owned(),
            book: Mutex::new(Book::new(capacity)),
            records: metrics.guard_records.clone(),
            pii: metrics.guard_pii.clone(),
            actions: metrics.guard_actions.clone(),
            action_counters: Default::default(),
            route_counters: Mutex::default(),
        }
    }

    /// The counters of route `route` (resolved at its first answer).
    fn route(&self, route: &str) -> Arc<RouteCounters> {
        let mut map = self
            .route_counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = map.get(route) {
            return c.clone();
        }
        let counters = Arc::new(RouteCounters {
            records: self
                .records
                .get_or_create(&RouteLabels {
                    tenant: self.tenant.clone(),
                    route: route.to_owned(),
                })
                .clone(),
            pii: Kind::ALL.map(|kind| {
                self.pii
                    .get_or_create(&PiiLabels {
                        tenant: self.tenant.clone(),
                        route: route.to_owned(),
                        kind: kind.name(),
                    })
                    .clone()
            }),
        });
        map.insert(route.into(), counters.clone());
        counters
    }

    /// The accounts, locked (a poisoned lock still holds a usable book).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The account's standing before it is served on `scope` with `budgets`: `Err` when it
    /// is refused (suspended, or over a `block` budget; counted), `Ok(true)` when over a
    /// `slow` budget.
    fn judge(
        &self,
        account: AccountId,
        scope: u64,
        budgets: &[crate::guard::budget::Budget],
    ) -> Result<bool, ProxyError> {
        let standing = self
            .lock()
            .standing(account, scope, budgets, crate::clock::coarse_now_ms());
        match standing {
            Verdict::Suspended => {
                self.count_action("refused_suspended");
                Err(ProxyError::AccountSuspended)
            }
            Verdict::Over {
                action: Action::Block,
                ..
            } => {
                self.count_action("refused_quota");
                Err(ProxyError::QuotaReached)
            }
            Verdict::Over {
                action: Action::Slow,
                ..
            } => Ok(true),
            _ => Ok(false),
        }
    }

    fn count_action(&self, action: &'static str) {
        let resolve = || {
            self.actions
                .get_or_create(&GuardActionLabels {
                    tenant: self.tenant.clone(),
                    action,
                })
                .clone()
        };
        match ACTIONS.iter().position(|a| *a == action) {
            Some(i) => self.action_counters[i].get_or_init(resolve).inc(),
            None => resolve().inc(),
        };
    }
}

/// What the guard phase learnt about a request, for its answer's tap.
pub struct Ticket {
    account: AccountId,
    who: Who,
    label: Option<Box<str>>,
    prefix: Box<str>,
    fingerprint: u64,
    record_id: Option<u64>,
    /// The account is to be read from the origin's answer (no request source named one).
    from_origin: bool,
    /// The request came outside the tenant's working hours.
    outside_hours: bool,
    /// Which of the route's budgets apply (`RouteGuard::budgets_in`), and the ledger's
    /// scope for them.
    slot: usize,
    scope: u64,
}

/// The ledger scope of a route's budgets slot: each route, and each group on it, has its
/// own windows.
fn scope_of(route_idx: usize, slot: usize) -> u64 {
    ((route_idx as u64) << 16) | slot as u64
}

/// Phase 2b: the account of a request on a guarded route and its standing. `Ok(Some(d))`:
/// hold the request `d` first (a `slow` budget).
pub fn admit<B>(
    ctx: &mut RequestCtx<'_>,
    route: &Route,
    req: &Request<B>,
) -> Flow<Option<Duration>> {
    let Some(guard) = &route.guard else {
        return Ok(None);
    };
    if !guard.counts_accounts() {
        // Personal data only: nothing is counted per account.
        return Ok(None);
    }
    let generation = ctx.generation;
    let tenant = ctx.tenant();
    let key = &generation.guard_key.key;
    let trusted = generation.config.is_trusted_proxy(ctx.conn.peer.ip());
    let identified = account::identify_labelled(
        &tenant.guard.sources,
        req.headers(),
        trusted,
        crate::clock::unix_now(),
        key,
    );
    let (identity, label) = (identified.identity, identified.label);
    let prefix = crate::shield::display_prefix(ctx.client(), generation.config.prefixes);
    let (account, who) = match identity {
        Identity::Account(id) => (id, Who::Named(identified.source.unwrap_or("account"))),
        Identity::Anonymous => (
            AccountId::keyed(key, account::TAG_ANONYMOUS, prefix.as_bytes()),
            Who::Anonymous,
        ),
        Identity::Unverified => (
            AccountId::keyed(key, account::TAG_UNVERIFIED, prefix.as_bytes()),
            Who::Unverified,
        ),
    };
    let from_origin = identity == Identity::Anonymous && tenant.guard.origin_account.is_some();
    let path = req.uri().path();
    let record_id = crate::guard::ids::find_id(&guard.record_ids, path)
        .map(|id| generation.guard_hashing.hash(id.as_bytes()));
    let book = &generation.guard_books[ctx.tenant_idx];
    let slot = tenant
        .guard
        .budget_slot(guard, label.as_deref(), req.headers(), trusted);
    let scope = scope_of(ctx.route_idx.unwrap_or(0), slot);
    let delay = book
        .judge(account, scope, guard.budgets_in(slot))?
        .then_some(guard.slow_delay);
    ctx.guard = Some(Box::new(Ticket {
        account,
        who,
        label: label.map(String::into_boxed_str),
        prefix: prefix.into_boxed_str(),
        fingerprint: fingerprint(ctx, req.headers()),
        record_id,
        from_origin,
        slot,
        scope,
        outside_hours: tenant.guard.office_hours.is_some_and(|hours| {
            let now = crate::clock::coarse_unix_secs();
            let zone = generation.config.status.time_zone;
            let local = now as i64 + i64::from(zone.offset_minutes(now)) * 60;
            !hours.contains_local(local)
        }),
    }));
    Ok(delay)
}

/// A hash of what tells the client's software apart: its TLS fingerprint and user agent.
fn fingerprint(ctx: &RequestCtx<'_>, headers: &http::HeaderMap) -> u64 {
    let hashing = &ctx.generation.guard_hashing;
    let ua = headers
        .get(http::header::USER_AGENT)
        .map_or(&b""[..], http::HeaderValue::as_bytes);
    let tls = ctx.conn.tls_fingerprint.as_deref().unwrap_or("");
    hashing.hash((tls, ua))
}

/// The tap of a guarded answer: counts its records and personal data, masks or cuts it,
/// and tells the book at the end.
pub struct GuardTap {
    /// The request's account (none on a route that only scans personal data).
    ticket: Option<Box<Ticket>>,
    journal: Option<Arc<Journal>>,
    route_name: Box<str>,
    guard: Arc<RouteGuard>,
    book: Arc<TenantBook>,
    scan: Option<AnswerScan>,
    /// The decoder of a compressed answer, and what it decoded of the last chunk.
    inflate: Option<crate::guard::inflate::Inflater>,
    inflated: Vec<u8>,
    header_records: Option<u64>,
    out: Vec<u8>,
    /// The tenant's signals (the watch hears of budgets crossed and answers cut).
    signals: Arc<crate::signals::TenantSignals>,
    /// Cluster mode: where what the account took is told to the other nodes.
    share: Option<Arc<dyn crate::state::GuardShare>>,
}

impl GuardTap {
    /// The tap for an answer of a guarded route, reading (and stripping) the fields the
    /// guard reads: the record count, the account named by the origin. `Err` ends the
    /// request instead (the origin named a suspended account).
    pub fn attach(
        ctx: &mut RequestCtx<'_>,
        guard: &Arc<RouteGuard>,
        fields: &mut OriginFields,
    ) -> Result<Option<Self>, ProxyError> {
        // An answer compressed although identity was asked for: decoded to be read, sent on
        // uncompressed. Codings other than gzip and deflate cannot be read: refused.
        let inflate = match fields.get("content-encoding") {
            Some(v) if guard.reads_body() && !v.trim_ascii().eq_ignore_ascii_case(b"identity") => {
                match crate::guard::inflate::Inflater::for_encoding(v) {
                    Some(i) => {
                        fields.remove("content-encoding");
                        Some(i)
                    }
                    None => {
                        return Err(ProxyError::UpstreamFailed);
                    }
                }
            }
            _ => None,
        };
        let header_records = guard.record_header.as_ref().and_then(|h| {
            let value = fields.remove(h.as_str())?;
            std::str::from_utf8(&value).ok()?.trim().parse::<u64>().ok()
        });
        let tenant = ctx.tenant();
        let origin_account = tenant
            .guard
            .origin_account
            .as_ref()
            .and_then(|h| fields.remove(h.as_str()))
            .filter(|v| !v.is_empty());
        let book = &ctx.generation.guard_books[ctx.tenant_idx];
        let route_name = ctx.route().map_or("-", |r| r.name.as_str()).into();
        let mut ticket = ctx.guard.take();
        if ticket.is_none() && !guard.reads_body() {
            return Ok(None);
        }
        if let Some(ticket) = ticket.as_mut().filter(|t| t.from_origin) {
            if let Some(value) = origin_account {
                ticket.account =
                    AccountId::keyed(&ctx.generation.guard_key.key, account::TAG_ORIGIN, &value);
                ticket.who = Who::Named("origin");
                ticket.label = Some(
                    String::from_utf8_lossy(&value)
                        .chars()
                        .take(64)
                        .collect::<String>()
                        .into(),
                );
                // Known only now: its standing is judged on the answer (nothing of it leaves).
                // Its group, by its name.
                ticket.slot = tenant.guard.budget_slot(
                    guard,
                    ticket.label.as_deref(),
                    &http::HeaderMap::new(),
                    false,
                );
                ticket.scope = scope_of(ctx.route_idx.unwrap_or(0), ticket.slot);
                book.judge(ticket.account, ticket.scope, guard.budgets_in(ticket.slot))?;
            }
        }
        let scan = guard
            .reads_body()
            .then(|| AnswerScan::new(guard.pii, guard.json_records.as_deref()));
        Ok(Some(Self {
            ticket,
            journal: ctx.generation.guard_journal.clone(),
            route_name,
            guard: guard.clone(),
            book: book.clone(),
            scan,
            inflate,
            inflated: Vec::new(),
            header_records,
            out: Vec::new(),
            signals: ctx.generation.signals[ctx.tenant_idx].clone(),
            share: ctx.generation.guard_share.clone(),
        }))
    }

    /// Whether the tap may hold back or change bytes.
    pub fn rewrites(&self) -> bool {
        self.inflate.is_some() || self.scan.as_ref().is_some_and(AnswerScan::rewrites)
    }

    /// Tells the book (and the journal) what the answer carried.
    fn settle(mut self, complete: bool) {
        let book = &self.book;
        let found = self
            .scan
            .as_ref()
            .map_or([0; Kind::COUNT], AnswerScan::found);
        let route = &*self.route_name;
        let counters = book.route(route);
        for (counter, n) in counters.pii.iter().zip(found) {
            if n > 0 {
                counter.inc_by(n);
            }
        }
        let Some(t) = &self.ticket else {
            return;
        };
        let records = self.guard.records(
            self.header_records,
            self.scan.as_ref().and_then(AnswerScan::json_records),
            t.record_id.is_some(),
            self.scan.as_ref().map_or(0, AnswerScan::persons),
        );
        if records > 0 {
            counters.records.inc_by(records);
        }
        let budgets = self.guard.budgets_in(t.slot);
        let visit = Visit {
            account: t.account,
            scope: t.scope,
            who: t.who,
            label: t.label.as_deref(),
            prefix: &t.prefix,
            fingerprint: t.fingerprint,
            records,
            pii: found,
            record_id: t.record_id,
            outside_hours: t.outside_hours,
        };
        let now = crate::clock::coarse_now_ms();
        let outcome = book.lock().record(&visit, budgets, now);
        if let Some(share) = &self.share {
            if records > 0 {
                share.taken(&book.tenant, t.account.0, t.scope, records);
            }
            if let Verdict::Over {
                action: Action::Suspend,
                ..
            } = outcome.verdict
            {
                if outcome.crossed {
                    share.suspended(&book.tenant, t.account.0, true);
                }
            }
        }
        let wall = crate::clock::unix_now_ms();
        if let Some(j) = &self.journal {
            j.answer(journal::Answer {
                tenant: book.tenant.clone(),
                account: t.account,
                who: t.who.name(),
                route: route.to_owned(),
                at_ms: wall,
                records,
                pii: found,
                persons: self.scan.as_mut().and_then(AnswerScan::take_distinct),
                record_id: t.record_id,
                prefix: t.prefix.to_string(),
                fingerprint: t.fingerprint,
            });
        }
        for flag in &outcome.flags {
            book.count_action(flag.name());
            if let Some(j) = &self.journal {
                j.event(
                    &book.tenant,
                    t.account,
                    wall,
                    flag.name(),
                    format!("from {}", t.prefix),
                );
            }
            tracing::warn!(
                target: "rempart::guard",
                tenant = %book.tenant,
                route,
                account = %t.account,
                who = t.who.name(),
                prefix = %t.prefix,
                flag = flag.name(),
                "unusual activity on an account"
            );
        }
        if let (
            true,
            Verdict::Over {
                index,
                action,
                records: in_window,
            },
        ) = (outcome.crossed, outcome.verdict)
        {
            book.count_action(action.name());
            if action != Action::Log {
                self.signals.guard_breach();
            }
            let budget = &budgets[index];
            if let Some(j) = &self.journal {
                let detail = format!(
                    "{in_window} records on {route} within {}s (budget {})",
                    budget.window_ms / 1000,
                    budget.limit
                );
                j.event(&book.tenant, t.account, wall, action.name(), detail);
                if action == Action::Suspend {
                    j.suspension(&book.tenant, t.account, true, wall);
                }
            }
            tracing::warn!(
                target: "rempart::guard",
                tenant = %book.tenant,
                route,
                account = %t.account,
                who = t.who.name(),
                prefix = %t.prefix,
                action = action.name(),
                records = in_window,
                budget = budget.limit,
                window_s = budget.window_ms / 1000,
                complete,
                "an account went over its record budget"
            );
        }
    }
}

impl ResponseTap for GuardTap {
    const REWRITES: bool = true;

    fn on_chunk(&mut self, chunk: &mut Bytes) -> TapFlow {
        let Some(scan) = &mut self.scan else {
            return TapFlow::Keep;
        };
        let input: &[u8] = match &mut self.inflate {
            Some(inflater) => {
                self.inflated.clear();
                if inflater.inflate(chunk, &mut self.inflated).is_err() {
                    self.undecodable();
                    return TapFlow::Cut;
                }
                &self.inflated
            }
            None => chunk,
        };
        self.out.clear();
        let step = scan.feed(input, &mut self.out);
        match step {
            // Counting only: the chunk goes as it is (decoded, when it was compressed).
            Step::Go if !scan.rewrites() => {
                if self.inflate.is_some() {
                    *chunk = Bytes::copy_from_slice(&self.inflated);
                }
                TapFlow::Keep
            }
            Step::Go => {
                *chunk = Bytes::copy_from_slice(&self.out);
                TapFlow::Keep
            }
            Step::Cut(kind) => {
                self.cut_alert(kind);
                TapFlow::Cut
            }
        }
    }

    fn tail(&mut self) -> Result<Bytes, Cut> {
        let Some(scan) = &mut self.scan else {
            return Ok(Bytes::new());
        };
        let mut out = Vec::new();
        if let Some(inflater) = &mut self.inflate {
            // The decoder's last bytes go through the scan like the others.
            let mut rest = Vec::new();
            if inflater.finish(&mut rest).is_err() {
                self.undecodable();
                return Err(Cut);
            }
            if let Step::Cut(kind) = scan.feed(&rest, &mut out) {
                self.cut_alert(kind);
                return Err(Cut);
            }
            if !scan.rewrites() {
                out = rest;
            }
        }
        let rewrites = scan.rewrites();
        match scan.finish(&mut out) {
            Step::Go if rewrites || self.inflate.is_some() => Ok(Bytes::from(out)),
            Step::Go => Ok(Bytes::new()),
            Step::Cut(kind) => {
                self.cut_alert(kind);
                Err(Cut)
            }
        }
    }

    fn on_end(self) {
        self.settle(true);
    }

    fn on_abort(self) {
        self.settle(false);
    }
}

impl GuardTap {
    /// A compressed answer that does not decode (broken, cut short, or a bomb).
    fn undecodable(&self) {
        self.book.count_action("cut");
        tracing::warn!(
            target: "rempart::guard",
            tenant = %self.book.tenant,
            route = &*self.route_name,
            "a compressed answer of a guarded route does not decode: cut"
        );
    }

    fn cut_alert(&self, kind: Kind) {
        self.book.count_action("cut");
        self.signals.guard_breach();
        if let Some(j) = &self.journal {
            let account = self.ticket.as_ref().map_or(AccountId(0), |t| t.account);
            let detail = format!("{} on {}", kind.name(), self.route_name);
            j.event(
                &self.book.tenant,
                account,
                crate::clock::unix_now_ms(),
                "cut",
                detail,
            );
        }
        tracing::error!(
            target: "rempart::guard",
            tenant = %self.book.tenant,
            route = &*self.route_name,
            kind = kind.name(),
            "an answer showed personal data this route must never show: cut before it"
        );
    }
}
