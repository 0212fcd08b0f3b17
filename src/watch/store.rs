//! The watch's SQLite file: security incidents (JSON documents) and each tenant's learnt
//! baseline, so a restart forgets neither. Read once at start; written by one thread of its
//! own in order, so the sampler never waits on the disk. The alert outbox lives in the same
//! file (`outbox`).

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{params, Connection};

use super::baseline::Kept;
use super::incident::{Incident, KEPT};

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    opened_ms INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS baselines (
    tenant TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
";

/// What was kept.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The latest incidents.
    pub incidents: Vec<Incident>,
    /// The largest incident number handed out.
    pub last_id: u64,
    /// Baselines by tenant id.
    pub baselines: Vec<(String, Kept)>,
}

enum Write {
    Incident(Box<Incident>),
    Baseline(String, Box<Kept>),
    Flush(mpsc::SyncSender<()>),
}

/// The writer of the watch's file.
#[derive(Debug)]
pub struct Store {
    writes: mpsc::SyncSender<Write>,
    path: std::path::PathBuf,
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

fn load(conn: &Connection) -> rusqlite::Result<Loaded> {
    let mut out = Loaded::default();
    let mut stmt = conn.prepare("SELECT body FROM incidents ORDER BY id DESC LIMIT ?1")?;
    let rows = stmt.query_map([KEPT as i64], |r| r.get::<_, String>(0))?;
    for body in rows {
        match serde_json::from_str::<Incident>(&body?) {
            Ok(i) => out.incidents.push(i),
            Err(e) => {
                tracing::warn!(target: "rempart::watch", error = %e, "an incident kept by another version is not read")
            }
        }
    }
    out.last_id = conn.query_row("SELECT COALESCE(MAX(id), 0) FROM incidents", [], |r| {
        r.get::<_, i64>(0)
    })? as u64;
    let mut stmt = conn.prepare("SELECT tenant, body FROM baselines")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (tenant, body) = row?;
        if let Ok(k) = serde_json::from_str::<Kept>(&body) {
            out.baselines.push((tenant, k));
        }
    }
    Ok(out)
}

impl Store {
    /// Opens (creating) the file at `path`; what it kept.
    pub fn open(path: &Path) -> anyhow::Result<(Self, Loaded)> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let conn =
            open(path).map_err(|e| anyhow::anyhow!("watch database `{}`: {e}", path.display()))?;
        let loaded = load(&conn)?;
        let (tx, rx) = mpsc::sync_channel(4_096);
        std::thread::Builder::new()
            .name("rempart-watch-store".into())
            .spawn(move || writer(conn, rx))?;
        Ok((
            Self {
                writes: tx,
                path: path.to_owned(),
            },
            loaded,
        ))
    }

    /// Incident `id` as saved (for those no longer kept in memory).
    pub fn read(&self, id: u64) -> Option<Incident> {
        let conn = open(&self.path).ok()?;
        let body: String = conn
            .query_row(
                "SELECT body FROM incidents WHERE id = ?1",
                [id as i64],
                |r| r.get(0),
            )
            .ok()?;
        serde_json::from_str(&body).ok()
    }

    /// Saves `incident` (as it is now).
    pub fn incident(&self, incident: &Incident) {
        if self
            .writes
            .try_send(Write::Incident(Box::new(incident.clone())))
            .is_err()
        {
            tracing::error!(target: "rempart::watch", incident = incident.id, "watch store queue full: incident not saved");
        }
    }

    /// Saves `tenant`'s baseline.
    pub fn baseline(&self, tenant: &str, kept: Kept) {
        let _ = self
            .writes
            .try_send(Write::Baseline(tenant.to_owned(), Box::new(kept)));
    }

    /// Waits until everything queued is on disk.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.writes.send(Write::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
    }
}

fn writer(mut conn: Connection, rx: mpsc::Receiver<Write>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(w) = rx.try_recv() {
            batch.push(w);
        }
        let mut flushes = Vec::new();
        let outcome = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            for w in batch {
                match w {
                    Write::Incident(i) => {
                        let body = serde_json::to_string(&*i).unwrap_or_default();
                        tx.execute(
                            "INSERT INTO incidents (id, tenant, opened_ms, body) VALUES (?1, ?2, ?3, ?4)
                             ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                            params![i.id as i64, i.tenant, i.opened_ms as i64, body],
                        )?;
                    }
                    Write::Baseline(tenant, k) => {
                        let body = serde_json::to_string(&*k).unwrap_or_default();
                        tx.execute(
                            "INSERT INTO baselines (tenant, body) VALUES (?1, ?2)
                             ON CONFLICT (tenant) DO UPDATE SET body = excluded.body",
                            params![tenant, body],
                        )?;
                    }
                    Write::Flush(done) => flushes.push(done),
                }
            }
            tx.commit()
        })();
        if let Err(e) = outcome {
            tracing::error!(target: "rempart::watch", error = %e, "cannot write the watch database");
        }
        for f in flushes {
            let _ = f.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::incident::{Incidents, Rules};
    use crate::watch::level::{Cause, Change, Level};

    #[test]
    fn incidents_and_baselines_are_read_back_and_old_incidents_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let (store, loaded) = Store::open(&path).unwrap();
        assert_eq!((loaded.incidents.len(), loaded.last_id), (0, 0));
        let mut book = Incidents::new(
            Rules {
                open_at: Level::Orange,
                escalate_after_ms: 0,
            },
            Vec::new(),
            0,
        );
        let change = Change {
            from: Level::Vert,
            to: Level::Orange,
            cause: Cause::Raised,
            at_ms: 5,
        };
        let told = book
            .on_change("ville", "Ville", &change, vec!["e".into()], &[], &[], 5)
            .unwrap();
        store.incident(&told.incident);
        let mut b = super::super::baseline::Baseline::default();
        b.learn(9, 40.0);
        store.baseline("ville", b.keep());
        store.flush();
        assert_eq!(store.read(told.incident.id), Some(told.incident.clone()));
        assert_eq!(store.read(99), None);
        drop(store);
        let (_, again) = Store::open(&path).unwrap();
        assert_eq!(again.incidents, vec![told.incident]);
        assert_eq!(again.last_id, 1);
        assert_eq!(again.baselines[0].0, "ville");
        let restored = super::super::baseline::Baseline::restore(&again.baselines[0].1).unwrap();
        assert_eq!(restored.samples(), 1);
    }
}
