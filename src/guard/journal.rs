//! The access journal: what each account took out through the guarded routes, kept in
//! SQLite (bounded retention) so that a data protection officer can answer the regulator
//! within 72 hours (GDPR art. 33): how many distinct persons, which kinds of data, between
//! which times, through which routes, from where. The one module of the guard that does I/O,
//! on a thread of its own: the request path only sends to a bounded channel.
//!
//! Nothing raw is stored: accounts are their keyed hashes, record identifiers and personal
//! data only as HyperLogLog registers of hashed values (which cannot be turned back into a
//! value), client addresses as prefixes. Per tenant, account, route and hour, one row adds
//! up the answers; suspensions and events (budgets crossed, unusual activity, answers cut)
//! have rows of their own. The journal also keeps the key of the accounts' hashes when the
//! configuration names none, so that an account keeps its identifier across restarts.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::account::AccountId;
use super::answer::PERSONS_PRECISION;
use super::distinct::Distinct;
use super::scan::Kind;

/// One hour, ms.
const HOUR_MS: u64 = 3_600_000;
/// Entries waiting for the writer at most (beyond: dropped and counted).
const QUEUE: usize = 65_536;
/// Prefixes and fingerprints remembered per row.
const KEPT_PER_ROW: usize = 16;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS access (
    tenant TEXT NOT NULL,
    account TEXT NOT NULL,
    hour_ms INTEGER NOT NULL,
    route TEXT NOT NULL,
    who TEXT NOT NULL,
    answers INTEGER NOT NULL,
    records INTEGER NOT NULL,
    nir INTEGER NOT NULL, iban INTEGER NOT NULL, card INTEGER NOT NULL,
    phone INTEGER NOT NULL, email INTEGER NOT NULL,
    persons BLOB,
    ids BLOB,
    prefixes TEXT NOT NULL,
    fingerprints TEXT NOT NULL,
    first_ms INTEGER NOT NULL,
    last_ms INTEGER NOT NULL,
    birth INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, account, hour_ms, route)
);
CREATE TABLE IF NOT EXISTS suspension (
    tenant TEXT NOT NULL,
    account TEXT NOT NULL,
    since_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, account)
);
CREATE TABLE IF NOT EXISTS event (
    tenant TEXT NOT NULL,
    account TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS event_account ON event (tenant, account, at_ms);
";

/// One answer on a guarded route, as the journal keeps it.
#[derive(Debug)]
pub struct Answer {
    /// Tenant id.
    pub tenant: String,
    /// The account.
    pub account: AccountId,
    /// How it was known (`Who::name`).
    pub who: &'static str,
    /// Route name.
    pub route: String,
    /// When (unix ms).
    pub at_ms: u64,
    /// Records taken.
    pub records: u64,
    /// Personal-data items, per kind.
    pub pii: [u64; Kind::COUNT],
    /// Distinct items per kind (none when the answer showed none).
    pub persons: Option<Box<[Distinct; Kind::COUNT]>>,
    /// Hash of the record identifier opened, if any.
    pub record_id: Option<u64>,
    /// Client prefix.
    pub prefix: String,
    /// Hash of the client's fingerprint.
    pub fingerprint: u64,
}

/// What the journal is told.
#[derive(Debug)]
enum Write {
    Answer(Box<Answer>),
    Suspension {
        tenant: String,
        account: AccountId,
        on: bool,
        at_ms: u64,
    },
    Event {
        tenant: String,
        account: AccountId,
        at_ms: u64,
        kind: &'static str,
        detail: String,
    },
    Flush(mpsc::Sender<()>),
}

/// What the journal held at start.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The key of the accounts' hashes kept here (made at the first start).
    pub key: Vec<u8>,
    /// Suspended accounts, per tenant.
    pub suspended: Vec<(String, AccountId)>,
}

/// The journal's writer, fed through a bounded channel.
#[derive(Debug)]
pub struct Journal {
    tx: mpsc::SyncSender<Write>,
    /// The writer thread (woken by `flush`).
    thread: std::thread::Thread,
    dropped: std::sync::atomic::AtomicU64,
}

/// Opening the journal failed.
#[derive(Debug, thiserror::Error)]
#[error("guard journal {path}: {source}")]
pub struct JournalError {
    path: String,
    #[source]
    source: rusqlite::Error,
}

fn open_db(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.execute_batch(SCHEMA)?;
    // Journals made before dates of birth were counted lack their column.
    let has_birth = conn
        .prepare("SELECT 1 FROM pragma_table_info('access') WHERE name = 'birth'")?
        .exists([])?;
    if !has_birth {
        conn.execute_batch("ALTER TABLE access ADD COLUMN birth INTEGER NOT NULL DEFAULT 0")?;
    }
    Ok(conn)
}

impl Journal {
    /// Opens (creating when missing, owner-only) the journal at `path`, forgets what is older
    /// than `keep_days`, reads the key and the suspensions, and starts the writer.
    pub fn open(path: &Path, now_ms: u64, keep_days: u64) -> Result<(Self, Loaded), JournalError> {
        let err = |source| JournalError {
            path: path.display().to_string(),
            source,
        };
        let created = !path.exists();
        let conn = open_db(path).map_err(err)?;
        if created {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        prune(&conn, now_ms, keep_days).map_err(err)?;
        let mut key: Vec<u8> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'account_key'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?
            .unwrap_or_default();
        if key.len() < 32 {
            let mut fresh = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut fresh)
                .map_err(|_| err(rusqlite::Error::InvalidQuery))?;
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('account_key', ?1)",
                params![&fresh[..]],
            )
            .map_err(err)?;
            key = fresh.to_vec();
        }
        let suspended = {
            let mut stmt = conn
                .prepare("SELECT tenant, account FROM suspension")
                .map_err(err)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(err)?;
            rows.filter_map(Result::ok)
                .filter_map(|(t, a)| Some((t, a.parse().ok()?)))
                .collect()
        };
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let thread_path = path.display().to_string();
        let handle = std::thread::Builder::new()
            .name("rempart-guard-journal".into())
            .spawn(move || writer(conn, rx, &thread_path, keep_days))
            .map_err(|e| err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        Ok((
            Self {
                tx,
                thread: handle.thread().clone(),
                dropped: Default::default(),
            },
            Loaded { key, suspended },
        ))
    }

    fn send(&self, w: Write) {
        if self.tx.try_send(w).is_err() {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Entries dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Journals an answer.
    pub fn answer(&self, answer: Answer) {
        self.send(Write::Answer(Box::new(answer)));
    }

    /// Journals a suspension (`on`) or its lifting.
    pub fn suspension(&self, tenant: &str, account: AccountId, on: bool, at_ms: u64) {
        self.send(Write::Suspension {
            tenant: tenant.to_owned(),
            account,
            on,
            at_ms,
        });
    }

    /// Journals an event: a budget crossed, unusual activity, an answer cut.
    pub fn event(
        &self,
        tenant: &str,
        account: AccountId,
        at_ms: u64,
        kind: &'static str,
        detail: String,
    ) {
        self.send(Write::Event {
            tenant: tenant.to_owned(),
            account,
            at_ms,
            kind,
            detail,
        });
    }

    /// Waits until everything sent so far is written (shutdown, tests).
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Write::Flush(tx)).is_ok() {
            self.thread.unpark();
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
    }
}

fn prune(conn: &Connection, now_ms: u64, keep_days: u64) -> Result<(), rusqlite::Error> {
    let before = now_ms.saturating_sub(keep_days * 24 * HOUR_MS);
    conn.execute(
        "DELETE FROM access WHERE hour_ms < ?1",
        params![before as i64],
    )?;
    conn.execute("DELETE FROM event WHERE at_ms < ?1", params![before as i64])?;
    Ok(())
}

/// Answers added up in memory before they are written: one per tenant, account, hour, route.
#[derive(Debug)]
struct Row {
    who: &'static str,
    answers: u64,
    records: u64,
    pii: [u64; Kind::COUNT],
    persons: Option<Box<[Distinct; Kind::COUNT]>>,
    ids: Option<Distinct>,
    prefixes: Vec<String>,
    fingerprints: Vec<u64>,
    first_ms: u64,
    last_ms: u64,
}

type RowKey = (String, AccountId, u64, String);

/// What a stored row holds besides its sums: persons, identifiers, prefixes, fingerprints.
type StoredRow = (Option<Vec<u8>>, Option<Vec<u8>>, String, String);

fn add(rows: &mut HashMap<RowKey, Row>, a: Answer) {
    let key = (a.tenant, a.account, a.at_ms - a.at_ms % HOUR_MS, a.route);
    let row = rows.entry(key).or_insert_with(|| Row {
        who: a.who,
        answers: 0,
        records: 0,
        pii: [0; Kind::COUNT],
        persons: None,
        ids: None,
        prefixes: Vec::new(),
        fingerprints: Vec::new(),
        first_ms: a.at_ms,
        last_ms: a.at_ms,
    });
    row.answers += 1;
    row.records += a.records;
    for (sum, n) in row.pii.iter_mut().zip(a.pii) {
        *sum += n;
    }
    if let Some(p) = a.persons {
        match &mut row.persons {
            Some(mine) => mine.iter_mut().zip(p.iter()).for_each(|(m, o)| m.merge(o)),
            None => row.persons = Some(p),
        }
    }
    if let Some(id) = a.record_id {
        row.ids
            .get_or_insert_with(|| Distinct::new(PERSONS_PRECISION))
            .insert(super::distinct::spread(id));
    }
    if !row.prefixes.contains(&a.prefix) && row.prefixes.len() < KEPT_PER_ROW {
        row.prefixes.push(a.prefix);
    }
    if !row.fingerprints.contains(&a.fingerprint) && row.fingerprints.len() < KEPT_PER_ROW {
        row.fingerprints.push(a.fingerprint);
    }
    row.first_ms = row.first_ms.min(a.at_ms);
    row.last_ms = row.last_ms.max(a.at_ms);
}

fn persons_blob(p: &[Distinct; Kind::COUNT]) -> Vec<u8> {
    p.iter().flat_map(Distinct::to_registers).collect()
}

fn persons_from(blob: &[u8]) -> Option<Box<[Distinct; Kind::COUNT]>> {
    // One counter per kind, in `Kind` order (rows written before a kind existed have fewer).
    let n = 1usize << PERSONS_PRECISION;
    if blob.is_empty() || blob.len() % n != 0 || blob.len() / n > Kind::COUNT {
        return None;
    }
    let mut parts: Vec<Distinct> = blob
        .chunks(n)
        .filter_map(Distinct::from_registers)
        .collect();
    parts.resize_with(Kind::COUNT, || Distinct::new(PERSONS_PRECISION));
    <[Distinct; Kind::COUNT]>::try_from(parts)
        .ok()
        .map(Box::new)
}

fn write_rows(conn: &mut Connection, rows: HashMap<RowKey, Row>) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction()?;
    for ((tenant, account, hour, route), mut row) in rows {
        let account = account.to_string();
        let old: Option<StoredRow> = tx
            .query_row(
                "SELECT persons, ids, prefixes, fingerprints FROM access
                 WHERE tenant = ?1 AND account = ?2 AND hour_ms = ?3 AND route = ?4",
                params![tenant, account, hour as i64, route],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        if let Some((persons, ids, prefixes, fingerprints)) = old {
            if let Some(old) = persons.as_deref().and_then(persons_from) {
                match &mut row.persons {
                    Some(mine) => mine
                        .iter_mut()
                        .zip(old.iter())
                        .for_each(|(m, o)| m.merge(o)),
                    None => row.persons = Some(old),
                }
            }
            if let Some(old) = ids.as_deref().and_then(Distinct::from_registers) {
                match &mut row.ids {
                    Some(mine) => mine.merge(&old),
                    None => row.ids = Some(old),
                }
            }
            for p in prefixes.split(',').filter(|p| !p.is_empty()) {
                if !row.prefixes.iter().any(|q| q == p) && row.prefixes.len() < KEPT_PER_ROW {
                    row.prefixes.push(p.to_owned());
                }
            }
            for f in fingerprints
                .split(',')
                .filter_map(|f| u64::from_str_radix(f, 16).ok())
            {
                if !row.fingerprints.contains(&f) && row.fingerprints.len() < KEPT_PER_ROW {
                    row.fingerprints.push(f);
                }
            }
        }
        let fingerprints: Vec<String> = row
            .fingerprints
            .iter()
            .map(|f| format!("{f:016x}"))
            .collect();
        tx.execute(
            "INSERT INTO access (tenant, account, hour_ms, route, who, answers, records,
                nir, iban, card, phone, email, persons, ids, prefixes, fingerprints, first_ms, last_ms,
                birth)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
                ?19)
             ON CONFLICT (tenant, account, hour_ms, route) DO UPDATE SET
                answers = answers + excluded.answers, records = records + excluded.records,
                nir = nir + excluded.nir, iban = iban + excluded.iban, card = card + excluded.card,
                phone = phone + excluded.phone, email = email + excluded.email,
                birth = birth + excluded.birth,
                persons = excluded.persons, ids = excluded.ids, prefixes = excluded.prefixes,
                fingerprints = excluded.fingerprints,
                first_ms = min(first_ms, excluded.first_ms), last_ms = max(last_ms, excluded.last_ms)",
            params![
                tenant,
                account,
                hour as i64,
                route,
                row.who,
                row.answers as i64,
                row.records as i64,
                row.pii[0] as i64,
                row.pii[1] as i64,
                row.pii[2] as i64,
                row.pii[3] as i64,
                row.pii[4] as i64,
                row.persons.as_deref().map(persons_blob),
                row.ids.as_ref().map(Distinct::to_registers),
                row.prefixes.join(","),
                fingerprints.join(","),
                row.first_ms as i64,
                row.last_ms as i64,
                row.pii[5] as i64,
            ],
        )?;
    }
    tx.commit()
}

fn apply(conn: &Connection, w: Write) -> Result<(), rusqlite::Error> {
    match w {
        Write::Suspension {
            tenant,
            account,
            on: true,
            at_ms,
        } => {
            conn.execute(
                "INSERT OR IGNORE INTO suspension (tenant, account, since_ms) VALUES (?1, ?2, ?3)",
                params![tenant, account.to_string(), at_ms as i64],
            )?;
            conn.execute(
                "INSERT INTO event (tenant, account, at_ms, kind, detail) VALUES (?1, ?2, ?3, 'suspended', '')",
                params![tenant, account.to_string(), at_ms as i64],
            )?;
        }
        Write::Suspension {
            tenant,
            account,
            on: false,
            at_ms,
        } => {
            conn.execute(
                "DELETE FROM suspension WHERE tenant = ?1 AND account = ?2",
                params![tenant, account.to_string()],
            )?;
            conn.execute(
                "INSERT INTO event (tenant, account, at_ms, kind, detail) VALUES (?1, ?2, ?3, 'lifted', '')",
                params![tenant, account.to_string(), at_ms as i64],
            )?;
        }
        Write::Event {
            tenant,
            account,
            at_ms,
            kind,
            detail,
        } => {
            conn.execute(
                "INSERT INTO event (tenant, account, at_ms, kind, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![tenant, account.to_string(), at_ms as i64, kind, detail],
            )?;
        }
        Write::Answer(_) | Write::Flush(_) => {}
    }
    Ok(())
}

/// The writer thread: adds answers up for a second, then writes them in one transaction.
fn writer(mut conn: Connection, rx: mpsc::Receiver<Write>, path: &str, keep_days: u64) {
    let mut rows: HashMap<RowKey, Row> = HashMap::new();
    let mut waiting: Vec<mpsc::Sender<()>> = Vec::new();
    let mut last_prune = std::time::Instant::now();
    loop {
        // Woken once a second (or by `flush`), never by each answer: a wake-up per answer
        // cost the request path a futex call and a context switch.
        std::thread::park_timeout(Duration::from_secs(1));
        let mut closed = false;
        let handle = |w: Write, rows: &mut HashMap<RowKey, Row>, waiting: &mut Vec<_>| match w {
            Write::Answer(a) => add(rows, *a),
            Write::Flush(done) => waiting.push(done),
            other => {
                if let Err(e) = apply(&conn, other) {
                    tracing::error!(target: "rempart::guard", path, error = %e, "cannot write the guard journal");
                }
            }
        };
        loop {
            match rx.try_recv() {
                Ok(w) => handle(w, &mut rows, &mut waiting),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if !rows.is_empty() {
            if let Err(e) = write_rows(&mut conn, std::mem::take(&mut rows)) {
                tracing::error!(target: "rempart::guard", path, error = %e, "cannot write the guard journal");
            }
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
        if last_prune.elapsed() > Duration::from_secs(3600) {
            last_prune = std::time::Instant::now();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            if let Err(e) = prune(&conn, now, keep_days) {
                tracing::error!(target: "rempart::guard", path, error = %e, "cannot prune the guard journal");
            }
        }
        if closed {
            return;
        }
    }
}

/// One account's activity between two times, read back for a report.
#[derive(Debug, Default, serde::Serialize)]
pub struct Activity {
    /// Answers.
    pub answers: u64,
    /// Records taken.
    pub records: u64,
    /// Items seen per kind (`Kind` order).
    pub pii: [u64; Kind::COUNT],
    /// Distinct items per kind (estimates).
    pub distinct: [u64; Kind::COUNT],
    /// Distinct record identifiers opened (estimate).
    pub distinct_ids: u64,
    /// Records per route.
    pub routes: Vec<(String, u64)>,
    /// Records per hour (unix ms of the hour's start).
    pub hours: Vec<(u64, u64)>,
    /// Client prefixes used.
    pub prefixes: Vec<String>,
    /// Distinct client fingerprints.
    pub fingerprints: usize,
    /// How the account was known.
    pub who: Vec<String>,
    /// First and last answer (unix ms).
    pub first_ms: Option<u64>,
    /// Last answer.
    pub last_ms: Option<u64>,
    /// Events (unix ms, kind, detail).
    pub events: Vec<(u64, String, String)>,
    /// Whether the account is suspended now.
    pub suspended: bool,
}

/// Reads `account`'s activity on `tenant` between `from_ms` and `to_ms` (by hour) from the
/// journal at `path`, read-only.
pub fn activity(
    path: &Path,
    tenant: &str,
    account: AccountId,
    from_ms: u64,
    to_ms: u64,
) -> Result<Activity, JournalError> {
    let err = |source| JournalError {
        path: path.display().to_string(),
        source,
    };
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(err)?;
    let id = account.to_string();
    let mut out = Activity::default();
    let mut persons: Option<Box<[Distinct; Kind::COUNT]>> = None;
    let mut ids: Option<Distinct> = None;
    let mut routes: HashMap<String, u64> = HashMap::new();
    let mut hours: std::collections::BTreeMap<u64, u64> = Default::default();
    let mut fingerprints: std::collections::HashSet<String> = Default::default();
    {
        let mut stmt = conn
            .prepare(
                "SELECT hour_ms, route, who, answers, records, nir, iban, card, phone, email,
                        persons, ids, prefixes, fingerprints, first_ms, last_ms, birth
                 FROM access WHERE tenant = ?1 AND account = ?2 AND hour_ms >= ?3 AND hour_ms <= ?4
                 ORDER BY hour_ms",
            )
            .map_err(err)?;
        let from_hour = from_ms - from_ms % HOUR_MS;
        let mut rows = stmt
            .query(params![tenant, id, from_hour as i64, to_ms as i64])
            .map_err(err)?;
        while let Some(r) = rows.next().map_err(err)? {
            let hour: i64 = r.get(0).map_err(err)?;
            let route: String = r.get(1).map_err(err)?;
            let who: String = r.get(2).map_err(err)?;
            let records = r.get::<_, i64>(4).map_err(err)? as u64;
            out.answers += r.get::<_, i64>(3).map_err(err)? as u64;
            out.records += records;
            for k in 0..5 {
                out.pii[k] += r.get::<_, i64>(5 + k).map_err(err)? as u64;
            }
            out.pii[5] += r.get::<_, i64>(16).map_err(err)? as u64;
            if let Some(p) = r
                .get::<_, Option<Vec<u8>>>(10)
                .map_err(err)?
                .as_deref()
                .and_then(persons_from)
            {
                match &mut persons {
                    Some(mine) => mine.iter_mut().zip(p.iter()).for_each(|(m, o)| m.merge(o)),
                    None => persons = Some(p),
                }
            }
            if let Some(d) = r
                .get::<_, Option<Vec<u8>>>(11)
                .map_err(err)?
                .as_deref()
                .and_then(Distinct::from_registers)
            {
                match &mut ids {
                    Some(mine) => mine.merge(&d),
                    None => ids = Some(d),
                }
            }
            for p in r
                .get::<_, String>(12)
                .map_err(err)?
                .split(',')
                .filter(|p| !p.is_empty())
            {
                if !out.prefixes.iter().any(|q| q == p) {
                    out.prefixes.push(p.to_owned());
                }
            }
            for f in r
                .get::<_, String>(13)
                .map_err(err)?
                .split(',')
                .filter(|f| !f.is_empty())
            {
                fingerprints.insert(f.to_owned());
            }
            if !out.who.contains(&who) {
                out.who.push(who);
            }
            let (first, last) = (
                r.get::<_, i64>(14).map_err(err)? as u64,
                r.get::<_, i64>(15).map_err(err)? as u64,
            );
            out.first_ms = Some(out.first_ms.map_or(first, |f| f.min(first)));
            out.last_ms = Some(out.last_ms.map_or(last, |l| l.max(last)));
            *routes.entry(route).or_default() += records;
            *hours.entry(hour as u64).or_default() += records;
        }
    }
    if let Some(p) = &persons {
        for k in 0..Kind::COUNT {
            out.distinct[k] = p[k].estimate().min(out.pii[k]);
        }
    }
    out.distinct_ids = ids.map_or(0, |d| d.estimate());
    out.fingerprints = fingerprints.len();
    let mut routes: Vec<(String, u64)> = routes.into_iter().collect();
    routes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    out.routes = routes;
    out.hours = hours.into_iter().collect();
    let mut stmt = conn
        .prepare(
            "SELECT at_ms, kind, detail FROM event WHERE tenant = ?1 AND account = ?2
             AND at_ms >= ?3 AND at_ms <= ?4 ORDER BY at_ms",
        )
        .map_err(err)?;
    out.events = stmt
        .query_map(params![tenant, id, from_ms as i64, to_ms as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?))
        })
        .map_err(err)?
        .filter_map(Result::ok)
        .collect();
    out.suspended = conn
        .query_row(
            "SELECT 1 FROM suspension WHERE tenant = ?1 AND account = ?2",
            params![tenant, id],
            |_| Ok(()),
        )
        .optional()
        .map_err(err)?
        .is_some();
    Ok(out)
}

/// The key kept in the journal at `path` (read-only), for finding an account by its name.
pub fn stored_key(path: &Path) -> Result<Option<Vec<u8>>, JournalError> {
    let err = |source| JournalError {
        path: path.display().to_string(),
        source,
    };
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(err)?;
    conn.query_row(
        "SELECT value FROM meta WHERE key = 'account_key'",
        [],
        |r| r.get(0),
    )
    .optional()
    .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(account: u64, at_ms: u64, records: u64, nirs: &[u64]) -> Answer {
        let mut persons: Box<[Distinct; Kind::COUNT]> =
            Box::new(std::array::from_fn(|_| Distinct::new(PERSONS_PRECISION)));
        for n in nirs {
            persons[0].insert(super::super::distinct::spread(*n));
        }
        Answer {
            tenant: "ville".into(),
            account: AccountId(account),
            who: "basic",
            route: "usagers".into(),
            at_ms,
            records,
            pii: [nirs.len() as u64, 0, 0, 0, 0, 0],
            persons: Some(persons),
            record_id: None,
            prefix: "192.0.2.0/24".into(),
            fingerprint: 7,
        }
    }

    #[test]
    fn answers_add_up_per_hour_and_distinct_persons_survive_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guard.db");
        let t0 = 1_800_000_000_000u64;
        let (journal, loaded) = Journal::open(&path, t0, 400).unwrap();
        assert_eq!(loaded.key.len(), 32);
        assert!(loaded.suspended.is_empty());
        // 30 answers of 20 persons, overlapping: 300 distinct persons over two hours.
        for i in 0..30u64 {
            let nirs: Vec<u64> = (i * 10..i * 10 + 20).collect();
            journal.answer(answer(1, t0 + i * 4 * 60_000, 20, &nirs));
        }
        journal.answer(answer(2, t0, 5, &[1, 2, 3, 4, 5]));
        journal.suspension("ville", AccountId(1), true, t0 + 3 * HOUR_MS);
        journal.event(
            "ville",
            AccountId(1),
            t0 + HOUR_MS,
            "block",
            "120 records in 1h (budget 100)".into(),
        );
        journal.flush();
        let a = activity(&path, "ville", AccountId(1), t0, t0 + 4 * HOUR_MS).unwrap();
        assert_eq!((a.answers, a.records, a.pii[0]), (30, 600, 600));
        assert!((280..=320).contains(&a.distinct[0]), "{a:?}");
        assert_eq!(a.hours.len(), 2);
        assert_eq!(a.routes, [("usagers".to_owned(), 600)]);
        assert_eq!(a.prefixes, ["192.0.2.0/24"]);
        assert!(a.suspended);
        assert_eq!(a.events.len(), 2, "{:?}", a.events);
        drop(journal);
        // A restart: the key and the suspension come back; more answers add to the rows.
        let (journal, again) = Journal::open(&path, t0 + 5 * HOUR_MS, 400).unwrap();
        assert_eq!(again.key, loaded.key);
        assert_eq!(again.suspended, [("ville".to_owned(), AccountId(1))]);
        journal.answer(answer(1, t0 + 60_000, 20, &(0..20).collect::<Vec<_>>()));
        journal.suspension("ville", AccountId(1), false, t0 + 5 * HOUR_MS);
        journal.flush();
        let a = activity(&path, "ville", AccountId(1), t0, t0 + 6 * HOUR_MS).unwrap();
        assert_eq!(a.records, 620);
        assert!(
            (280..=320).contains(&a.distinct[0]),
            "the same persons again: {a:?}"
        );
        assert!(!a.suspended);
        // Other accounts and other times are apart.
        let b = activity(&path, "ville", AccountId(2), t0, t0 + HOUR_MS).unwrap();
        assert_eq!((b.records, b.distinct[0]), (5, 5));
        let none = activity(
            &path,
            "ville",
            AccountId(1),
            t0 + 10 * HOUR_MS,
            t0 + 11 * HOUR_MS,
        )
        .unwrap();
        assert_eq!(none.answers, 0);
        // Past the retention, rows go.
        drop(journal);
        let (_journal, _) = Journal::open(&path, t0 + 3 * 24 * HOUR_MS, 1).unwrap();
        let gone = activity(&path, "ville", AccountId(1), t0, t0 + 6 * HOUR_MS).unwrap();
        assert_eq!(gone.answers, 0);
    }
}
