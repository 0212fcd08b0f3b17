//! The embedded status history: SQLite (WAL) at a configured path. Incidents (as JSON
//! documents), daily component tallies and operator overrides. Reads happen once at start;
//! writes go through one writer thread in order, off the async threads, so a burst of
//! changes never blocks request handling. `flush` waits until every queued write is on disk.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc;

use rusqlite::{params, Connection, OptionalExtension};

use super::model::{ComponentState, DayTally, Incident};

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_tenant ON incidents (tenant, updated_at);
CREATE TABLE IF NOT EXISTS component_days (
    tenant TEXT NOT NULL,
    component TEXT NOT NULL,
    day INTEGER NOT NULL,
    operational INTEGER NOT NULL DEFAULT 0,
    degraded INTEGER NOT NULL DEFAULT 0,
    partial INTEGER NOT NULL DEFAULT 0,
    major INTEGER NOT NULL DEFAULT 0,
    maintenance INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, component, day)
);
CREATE TABLE IF NOT EXISTS overrides (
    tenant TEXT NOT NULL,
    component TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (tenant, component)
);
CREATE TABLE IF NOT EXISTS maintenance_mode (
    tenant TEXT NOT NULL,
    route TEXT NOT NULL,
    PRIMARY KEY (tenant, route)
);
CREATE TABLE IF NOT EXISTS subscribers (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    email TEXT NOT NULL,
    components TEXT NOT NULL,
    lang TEXT NOT NULL,
    confirmed INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS subscribers_address ON subscribers (tenant, email);
CREATE TABLE IF NOT EXISTS secrets (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
";

/// Everything read back at start.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Incidents of the last `keep_days`, all tenants.
    pub incidents: Vec<Incident>,
    /// Daily tallies by (tenant, component, day).
    pub days: HashMap<(String, String, u64), DayTally>,
    /// Operator overrides by (tenant, component).
    pub overrides: HashMap<(String, String), ComponentState>,
    /// Largest incident id ever handed out.
    pub last_id: u64,
    /// Maintenance mode switched on by operators: (tenant, route name or `*`).
    pub maintenance: Vec<(String, String)>,
    /// Subscribers, confirmed or not.
    pub subscribers: Vec<super::subscribe::Subscriber>,
    /// Secret behind subscription tokens (created on first open; empty read-only).
    pub secret: Vec<u8>,
}

enum Write {
    Incident(Box<Incident>),
    Days(Vec<(String, String, u64, DayTally)>),
    Override(String, String, Option<ComponentState>),
    Maintenance(String, String, bool),
    Subscriber(Box<super::subscribe::Subscriber>),
    Unsubscribe(u64),
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// Handle on the database; cheap to share behind an `Arc`.
pub struct Store {
    writer: std::sync::Mutex<mpsc::Sender<Write>>,
}

/// Opening or reading the database failed.
#[derive(Debug, thiserror::Error)]
#[error("status database {path}: {source}")]
pub struct StoreError {
    path: String,
    #[source]
    source: rusqlite::Error,
}

fn open(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

impl Store {
    /// Opens (creating when missing) the database at `path`, reads what it holds from the
    /// last `keep_days`, and starts the writer thread.
    pub fn open(path: &Path, now_s: u64, keep_days: u64) -> Result<(Self, Loaded), StoreError> {
        let err = |source| StoreError {
            path: path.display().to_string(),
            source,
        };
        let conn = open(path).map_err(err)?;
        let mut loaded = load(&conn, now_s, keep_days).map_err(err)?;
        if loaded.secret.len() < 32 {
            let rng = ring::rand::SystemRandom::new();
            let mut secret = [0u8; 32];
            ring::rand::SecureRandom::fill(&rng, &mut secret).map_err(|_| StoreError {
                path: path.display().to_string(),
                source: rusqlite::Error::InvalidQuery,
            })?;
            conn.execute(
                "INSERT OR REPLACE INTO secrets (key, value) VALUES ('subscriptions', ?1)",
                params![&secret[..]],
            )
            .map_err(err)?;
            loaded.secret = secret.to_vec();
        }
        let (tx, rx) = mpsc::channel();
        let thread_path = path.to_owned();
        std::thread::Builder::new()
            .name("rempart-status-db".into())
            .spawn(move || writer(conn, rx, &thread_path))
            .map_err(|e| StoreError {
                path: path.display().to_string(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        Ok((
            Self {
                writer: std::sync::Mutex::new(tx),
            },
            loaded,
        ))
    }

    /// Reads a database without starting a writer (for `rempart status export`).
    pub fn read_only(path: &Path, now_s: u64, keep_days: u64) -> Result<Loaded, StoreError> {
        let err = |source| StoreError {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(err)?;
        load(&conn, now_s, keep_days).map_err(err)
    }

    fn send(&self, w: Write) {
        if let Ok(tx) = self.writer.lock() {
            let _ = tx.send(w);
        }
    }

    /// Saves an incident (insert or replace).
    pub fn save_incident(&self, incident: &Incident) {
        self.send(Write::Incident(Box::new(incident.clone())));
    }

    /// Adds seconds to daily tallies.
    pub fn add_days(&self, rows: Vec<(String, String, u64, DayTally)>) {
        if !rows.is_empty() {
            self.send(Write::Days(rows));
        }
    }

    /// Sets or clears an operator override.
    pub fn set_override(&self, tenant: &str, component: &str, state: Option<ComponentState>) {
        self.send(Write::Override(
            tenant.to_owned(),
            component.to_owned(),
            state,
        ));
    }

    /// Records maintenance mode of a tenant's route (`*` = the whole tenant).
    pub fn set_maintenance(&self, tenant: &str, route: &str, on: bool) {
        self.send(Write::Maintenance(tenant.to_owned(), route.to_owned(), on));
    }

    /// Saves a subscriber (insert or replace).
    pub fn save_subscriber(&self, s: &super::subscribe::Subscriber) {
        self.send(Write::Subscriber(Box::new(s.clone())));
    }

    /// Deletes a subscriber: nothing of them is kept.
    pub fn delete_subscriber(&self, id: u64) {
        self.send(Write::Unsubscribe(id));
    }

    /// Blocks until every write queued before this call is committed.
    pub fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.send(Write::Flush(tx));
        let _ = rx.recv_timeout(std::time::Duration::from_secs(10));
    }
}

fn load(conn: &Connection, now_s: u64, keep_days: u64) -> Result<Loaded, rusqlite::Error> {
    let mut loaded = Loaded::default();
    let horizon_s = now_s.saturating_sub(keep_days * super::model::DAY_S);
    let mut stmt = conn.prepare("SELECT body FROM incidents WHERE updated_at >= ?1")?;
    let rows = stmt.query_map(params![horizon_s as i64], |r| r.get::<_, String>(0))?;
    for body in rows {
        match serde_json::from_str::<Incident>(&body?) {
            Ok(i) => loaded.incidents.push(i),
            Err(e) => {
                tracing::warn!(error = %e, "unreadable incident in the status database skipped")
            }
        }
    }
    let mut stmt = conn.prepare(
        "SELECT tenant, component, day, operational, degraded, partial, major, maintenance
         FROM component_days WHERE day >= ?1",
    )?;
    let rows = stmt.query_map(params![(horizon_s / super::model::DAY_S) as i64], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            [
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, i64>(7)?,
            ],
        ))
    })?;
    for row in rows {
        let (tenant, component, day, secs) = row?;
        let tally = secs.map(|s| u32::try_from(s.max(0)).unwrap_or(u32::MAX));
        loaded
            .days
            .insert((tenant, component, day.max(0) as u64), tally);
    }
    let mut stmt = conn.prepare("SELECT tenant, component, state FROM overrides")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (tenant, component, state) = row?;
        if let Some(s) = ComponentState::parse(&state) {
            loaded.overrides.insert((tenant, component), s);
        }
    }
    let mut stmt = conn.prepare("SELECT tenant, route FROM maintenance_mode")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        loaded.maintenance.push(row?);
    }
    let mut stmt = conn.prepare(
        "SELECT id, tenant, email, components, lang, confirmed, created_at FROM subscribers",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(super::subscribe::Subscriber {
            id: r.get::<_, i64>(0)?.max(0) as u64,
            tenant: r.get(1)?,
            email: r.get(2)?,
            components: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
            lang: r.get(4)?,
            confirmed: r.get::<_, i64>(5)? != 0,
            created_at: r.get::<_, i64>(6)?.max(0) as u64,
        })
    })?;
    for row in rows {
        loaded.subscribers.push(row?);
    }
    loaded.secret = conn
        .query_row(
            "SELECT value FROM secrets WHERE key = 'subscriptions'",
            [],
            |r| r.get::<_, Vec<u8>>(0),
        )
        .optional()?
        .unwrap_or_default();
    let max_id: Option<i64> = conn
        .query_row("SELECT MAX(id) FROM incidents", [], |r| r.get(0))
        .optional()?
        .flatten();
    loaded.last_id = max_id.unwrap_or(0).max(0) as u64;
    Ok(loaded)
}

fn writer(mut conn: Connection, rx: mpsc::Receiver<Write>, path: &Path) {
    while let Ok(first) = rx.recv() {
        // Batch whatever is queued into one transaction.
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut waiting = Vec::new();
        let outcome = (|| -> Result<(), rusqlite::Error> {
            let tx = conn.transaction()?;
            for w in batch {
                match w {
                    Write::Incident(i) => {
                        let body = serde_json::to_string(&i)
                            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                        tx.execute(
                            "INSERT INTO incidents (id, tenant, updated_at, body) VALUES (?1, ?2, ?3, ?4)
                             ON CONFLICT(id) DO UPDATE SET tenant = ?2, updated_at = ?3, body = ?4",
                            params![i.id as i64, i.tenant, i.updated_at as i64, body],
                        )?;
                    }
                    Write::Days(rows) => {
                        for (tenant, component, day, t) in rows {
                            tx.execute(
                                "INSERT INTO component_days (tenant, component, day, operational, degraded, partial, major, maintenance)
                                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                                 ON CONFLICT(tenant, component, day) DO UPDATE SET
                                   operational = operational + ?4, degraded = degraded + ?5,
                                   partial = partial + ?6, major = major + ?7, maintenance = maintenance + ?8",
                                params![tenant, component, day as i64, t[0], t[1], t[2], t[3], t[4]],
                            )?;
                        }
                    }
                    Write::Override(tenant, component, state) => match state {
                        Some(s) => {
                            tx.execute(
                                "INSERT INTO overrides (tenant, component, state) VALUES (?1, ?2, ?3)
                                 ON CONFLICT(tenant, component) DO UPDATE SET state = ?3",
                                params![tenant, component, s.name()],
                            )?;
                        }
                        None => {
                            tx.execute(
                                "DELETE FROM overrides WHERE tenant = ?1 AND component = ?2",
                                params![tenant, component],
                            )?;
                        }
                    },
                    Write::Maintenance(tenant, route, on) => {
                        if on {
                            tx.execute(
                                "INSERT OR IGNORE INTO maintenance_mode (tenant, route) VALUES (?1, ?2)",
                                params![tenant, route],
                            )?;
                        } else {
                            tx.execute(
                                "DELETE FROM maintenance_mode WHERE tenant = ?1 AND route = ?2",
                                params![tenant, route],
                            )?;
                        }
                    }
                    Write::Subscriber(sub) => {
                        let components = serde_json::to_string(&sub.components)
                            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                        tx.execute(
                            "INSERT INTO subscribers (id, tenant, email, components, lang, confirmed, created_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                             ON CONFLICT(id) DO UPDATE SET components = ?4, lang = ?5, confirmed = ?6",
                            params![sub.id as i64, sub.tenant, sub.email, components, sub.lang, i64::from(sub.confirmed), sub.created_at as i64],
                        )?;
                    }
                    Write::Unsubscribe(id) => {
                        tx.execute("DELETE FROM subscribers WHERE id = ?1", params![id as i64])?;
                    }
                    Write::Flush(done) => waiting.push(done),
                }
            }
            tx.commit()
        })();
        if let Err(e) = outcome {
            tracing::error!(path = %path.display(), error = %e, "status database write failed");
        }
        for w in waiting {
            let _ = w.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::model::{Impact, IncidentKind, IncidentStatus};

    #[test]
    fn survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.db");
        let now = 100 * super::super::model::DAY_S;
        {
            let (store, loaded) = Store::open(&path, now, 90).unwrap();
            assert!(loaded.incidents.is_empty());
            let mut i = Incident {
                id: 7,
                tenant: "ville".into(),
                kind: IncidentKind::Incident,
                title: "Panne".into(),
                title_en: None,
                impact: Impact::Major,
                components: vec!["etat-civil".into()],
                published: false,
                automatic: true,
                created_at: now,
                updated_at: now,
                resolved_at: None,
                starts_at: None,
                ends_at: None,
                updates: Vec::new(),
            };
            i.push_update(
                IncidentStatus::Investigating,
                "On cherche".into(),
                None,
                now,
            );
            store.save_incident(&i);
            i.push_update(IncidentStatus::Resolved, "Réparé".into(), None, now + 5);
            store.save_incident(&i);
            store.add_days(vec![(
                "ville".into(),
                "etat-civil".into(),
                100,
                [10, 0, 0, 5, 0],
            )]);
            store.add_days(vec![(
                "ville".into(),
                "etat-civil".into(),
                100,
                [1, 0, 0, 0, 0],
            )]);
            store.set_override("ville", "ecoles", Some(ComponentState::UnderMaintenance));
            store.set_override("ville", "x", Some(ComponentState::MajorOutage));
            store.set_override("ville", "x", None);
            store.flush();
        }
        let (_store, loaded) = Store::open(&path, now + 10, 90).unwrap();
        assert_eq!(loaded.incidents.len(), 1);
        assert_eq!(loaded.incidents[0].updates.len(), 2);
        assert_eq!(loaded.last_id, 7);
        assert_eq!(
            loaded.days.get(&("ville".into(), "etat-civil".into(), 100)),
            Some(&[11, 0, 0, 5, 0])
        );
        assert_eq!(loaded.overrides.len(), 1);
        // Older than the horizon: not loaded.
        let far = Store::read_only(&path, now + 200 * super::super::model::DAY_S, 90).unwrap();
        assert!(far.incidents.is_empty() && far.days.is_empty());
    }
}
