//! The durable outbox: messages to operators (and, through the same senders, residents)
//! queued in SQLite before anything is sent, so a restart, a crash or a mail server down
//! for an hour loses none. Each message belongs to a channel (a configured destination) and
//! a group (an incident): while a message waits, a newer one of the same group replaces it
//! (one update with the latest state rather than a burst). A channel sends at most its
//! rate per minute; a failed delivery is retried with a growing delay, for a day at most;
//! messages are delivered at least once (each carries a stable delivery id so receivers
//! can drop a duplicate).
//!
//! The outbox knows nothing of what it carries: a `Courier` turns a stored payload into a
//! delivery when it is sent (so secrets stay in the configuration, never in the database,
//! and a signature carries the time it is sent). `outbox::send` holds the senders: SMTP
//! (lettre), HTTP(S) (hyper), syslog (UDP, TCP).

pub mod send;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection};
use tokio_util::sync::CancellationToken;

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    channel TEXT NOT NULL,
    grp TEXT NOT NULL,
    payload TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    next_ms INTEGER NOT NULL,
    done_ms INTEGER,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_ms);
CREATE INDEX IF NOT EXISTS outbox_group ON outbox (channel, grp, state);
";

/// How long a message is retried before it is given up.
const GIVE_UP_AFTER_MS: u64 = 24 * 3_600_000;
/// Sent and given-up messages are kept this long (operators' history), then deleted.
const KEEP_DONE_MS: u64 = 30 * 24 * 3_600_000;
/// Messages waiting in the writer's queue at most (the caller never waits).
const QUEUE: usize = 10_000;

/// A delivery that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Retrying cannot help (the destination refused the message for good, or is gone).
    pub permanent: bool,
    /// What happened (logged; never personal data).
    pub message: String,
}

impl Failure {
    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            permanent: false,
            message: message.into(),
        }
    }

    /// A failure not worth retrying.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            permanent: true,
            message: message.into(),
        }
    }
}

/// A future a courier returns.
pub type Delivery = Pin<Box<dyn Future<Output = Result<(), Failure>> + Send>>;

/// One message as the courier receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Row id.
    pub id: u64,
    /// Channel name.
    pub channel: String,
    /// Group (what later messages replace it by).
    pub group: String,
    /// Stored payload.
    pub payload: String,
    /// How many times a newer message replaced it (a stable delivery id is `id` and this).
    pub version: u64,
}

impl Message {
    /// A delivery id receivers can drop duplicates by.
    pub fn delivery_id(&self) -> String {
        format!("{}-{}", self.id, self.version)
    }
}

/// Turns stored payloads into deliveries.
pub trait Courier: Send + Sync + 'static {
    /// Messages per minute at most on `channel`; `None` when the channel no longer exists
    /// (its messages are given up).
    fn per_minute(&self, channel: &str) -> Option<u32>;
    /// Delivers `message` now.
    fn deliver(&self, message: Message) -> Delivery;
}

enum Write {
    Put {
        channel: String,
        group: String,
        payload: String,
        now_ms: u64,
    },
    Flush(mpsc::SyncSender<()>),
}

/// Counts by state, for operators.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Waiting (first attempt or retry).
    pub pending: u64,
    /// Delivered.
    pub sent: u64,
    /// Given up.
    pub failed: u64,
}

/// What becomes of a message once sent or given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Kept 30 days (operators' alerts: their history).
    Keep,
    /// Deleted at once (residents' messages: their addresses are not kept longer than
    /// needed; the log says what happened without them).
    Delete,
}

/// The outbox of one database file.
pub struct Outbox {
    path: PathBuf,
    retention: Retention,
    writes: mpsc::SyncSender<Write>,
    wake: Arc<tokio::sync::Notify>,
    dropped: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("path", &self.path).finish()
    }
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

impl Outbox {
    /// Opens (creating) the outbox in the SQLite file at `path`; messages being sent when
    /// the process stopped, or waiting for a retry, are due at once.
    pub fn open(path: &Path) -> anyhow::Result<Arc<Self>> {
        Self::open_with(path, Retention::Keep)
    }

    /// `open`, with what becomes of messages once done.
    pub fn open_with(path: &Path, retention: Retention) -> anyhow::Result<Arc<Self>> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let conn = open_connection(path)
            .map_err(|e| anyhow::anyhow!("outbox `{}`: {e}", path.display()))?;
        // A restart is a retry point: what was being sent, or waiting for its next
        // attempt, goes out now.
        conn.execute(
            "UPDATE outbox SET state = 'pending', next_ms = MIN(next_ms, ?1)
             WHERE state IN ('pending', 'sending')",
            [crate::clock::unix_now_ms() as i64],
        )?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let wake = Arc::new(tokio::sync::Notify::new());
        let writer_wake = wake.clone();
        std::thread::Builder::new()
            .name("rempart-outbox".into())
            .spawn(move || writer(conn, rx, &writer_wake))?;
        Ok(Arc::new(Self {
            path: path.to_owned(),
            retention,
            writes: tx,
            wake,
            dropped: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// Queues `payload` for `channel`, replacing a message of the same `group` still
    /// waiting there. Never blocks; written to disk by the outbox's own thread.
    pub fn put(&self, channel: &str, group: &str, payload: String, now_ms: u64) {
        let write = Write::Put {
            channel: channel.to_owned(),
            group: group.to_owned(),
            payload,
            now_ms,
        };
        if self.writes.try_send(write).is_err() {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(target: "rempart::outbox", channel, "outbox queue full: message dropped");
        }
    }

    /// Waits until every message put so far is on disk.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.writes.send(Write::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
    }

    /// Messages by state (reads the file).
    pub fn counts(&self) -> anyhow::Result<Counts> {
        let conn = open_connection(&self.path)?;
        let mut counts = Counts::default();
        let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM outbox GROUP BY state")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        for row in rows {
            let (state, n) = row?;
            match state.as_str() {
                "sent" => counts.sent += n,
                "failed" => counts.failed += n,
                _ => counts.pending += n,
            }
        }
        Ok(counts)
    }
}

fn writer(mut conn: Connection, rx: mpsc::Receiver<Write>, wake: &tokio::sync::Notify) {
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
                    Write::Put {
                        channel,
                        group,
                        payload,
                        now_ms,
                    } => {
                        let replaced = tx.execute(
                            "UPDATE outbox SET payload = ?1, version = version + 1
                             WHERE channel = ?2 AND grp = ?3 AND state = 'pending'",
                            params![payload, channel, group],
                        )?;
                        if replaced == 0 {
                            tx.execute(
                                "INSERT INTO outbox (channel, grp, payload, state, created_ms, next_ms)
                                 VALUES (?1, ?2, ?3, 'pending', ?4, ?4)",
                                params![channel, group, payload, now_ms as i64],
                            )?;
                        }
                    }
                    Write::Flush(done) => flushes.push(done),
                }
            }
            tx.commit()
        })();
        if let Err(e) = outcome {
            tracing::error!(target: "rempart::outbox", error = %e, "cannot write the outbox");
        }
        for f in flushes {
            let _ = f.send(());
        }
        wake.notify_one();
    }
}

/// The delay before attempt `attempts + 1`: 30 s, doubling, at most 30 minutes.
pub fn retry_delay_ms(attempts: u32) -> u64 {
    (30_000u64 << attempts.min(6)).min(30 * 60_000)
}

/// Per-channel sending windows (the last minute's sends) and what is in flight.
#[derive(Default)]
struct Pacing {
    sent: HashMap<String, VecDeque<u64>>,
    in_flight: HashMap<String, u64>,
}

impl Pacing {
    /// Whether `channel` may send now: nothing in flight, under its rate over the last
    /// minute, and spread evenly (a minute divided by the rate since the last send).
    fn may_send(&mut self, channel: &str, per_minute: u32, now_ms: u64) -> bool {
        if self.in_flight.contains_key(channel) {
            return false;
        }
        let window = self.sent.entry(channel.to_owned()).or_default();
        while window
            .front()
            .is_some_and(|t| now_ms.saturating_sub(*t) >= 60_000)
        {
            window.pop_front();
        }
        let gap = 60_000 / u64::from(per_minute.max(1));
        window.len() < per_minute as usize
            && window
                .back()
                .is_none_or(|t| now_ms.saturating_sub(*t) >= gap)
    }

    /// When `channel` may send again, ms.
    fn next_slot(&self, channel: &str, per_minute: u32) -> Option<u64> {
        let window = self.sent.get(channel)?;
        let gap = 60_000 / u64::from(per_minute.max(1));
        let spread = window.back().map(|t| t + gap);
        let full = (window.len() >= per_minute as usize)
            .then(|| window.front().map(|t| t + 60_000))
            .flatten();
        spread.max(full)
    }
}

struct Due {
    message: Message,
    attempts: u32,
    created_ms: u64,
}

fn due(conn: &Connection, now_ms: u64) -> rusqlite::Result<Vec<Due>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, channel, grp, payload, version, attempts, created_ms FROM outbox
         WHERE state = 'pending' AND next_ms <= ?1 ORDER BY id LIMIT 200",
    )?;
    let rows = stmt.query_map([now_ms as i64], |r| {
        Ok(Due {
            message: Message {
                id: r.get::<_, i64>(0)? as u64,
                channel: r.get(1)?,
                group: r.get(2)?,
                payload: r.get(3)?,
                version: r.get::<_, i64>(4)? as u64,
            },
            attempts: r.get(5)?,
            created_ms: r.get::<_, i64>(6)? as u64,
        })
    })?;
    rows.collect()
}

fn next_wake(conn: &Connection) -> rusqlite::Result<Option<u64>> {
    conn.query_row(
        "SELECT MIN(next_ms) FROM outbox WHERE state = 'pending'",
        [],
        |r| r.get::<_, Option<i64>>(0),
    )
    .map(|v| v.map(|v| v as u64))
}

enum Outcome {
    Sent,
    Retry(String, u64),
    GiveUp(String),
}

/// Delivers the outbox's messages through `courier` until `shutdown`.
pub async fn run(outbox: Arc<Outbox>, courier: Arc<dyn Courier>, shutdown: CancellationToken) {
    let path = outbox.path.clone();
    let conn = match tokio::task::spawn_blocking(move || open_connection(&path)).await {
        Ok(Ok(c)) => Arc::new(Mutex::new(c)),
        Ok(Err(e)) => {
            tracing::error!(target: "rempart::outbox", error = %e, "cannot open the outbox: nothing will be sent");
            return;
        }
        Err(_) => return,
    };
    let mut pacing = Pacing::default();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(Due, Outcome)>();
    let mut last_prune = 0u64;
    loop {
        let now = crate::clock::unix_now_ms();
        // Record what finished.
        while let Ok((d, outcome)) = done_rx.try_recv() {
            pacing.in_flight.remove(&d.message.channel);
            record(&conn, &d, outcome, now, outbox.retention).await;
        }
        if now.saturating_sub(last_prune) > 3_600_000 {
            last_prune = now;
            let c = conn.clone();
            let _ = tokio::task::spawn_blocking(move || {
                lock(&c).execute(
                    "DELETE FROM outbox WHERE state IN ('sent', 'failed') AND done_ms < ?1",
                    [now.saturating_sub(KEEP_DONE_MS) as i64],
                )
            })
            .await;
        }
        let c = conn.clone();
        let rows = tokio::task::spawn_blocking(move || due(&lock(&c), now))
            .await
            .ok()
            .and_then(|r| {
                r.map_err(|e| tracing::error!(target: "rempart::outbox", error = %e, "cannot read the outbox"))
                    .ok()
            })
            .unwrap_or_default();
        let mut wake_at = None::<u64>;
        for d in rows {
            let Some(per_minute) = courier.per_minute(&d.message.channel) else {
                let outcome = Outcome::GiveUp("channel no longer configured".into());
                record(&conn, &d, outcome, now, outbox.retention).await;
                continue;
            };
            let p = &mut pacing;
            if !p.may_send(&d.message.channel, per_minute, now) {
                if let Some(slot) = p.next_slot(&d.message.channel, per_minute) {
                    wake_at = Some(wake_at.map_or(slot, |w| w.min(slot)));
                }
                continue;
            }
            p.in_flight.insert(d.message.channel.clone(), d.message.id);
            p.sent
                .entry(d.message.channel.clone())
                .or_default()
                .push_back(now);
            let c = conn.clone();
            let id = d.message.id;
            let _ = tokio::task::spawn_blocking(move || {
                lock(&c).execute(
                    "UPDATE outbox SET state = 'sending' WHERE id = ?1",
                    [id as i64],
                )
            })
            .await;
            let delivery = courier.deliver(d.message.clone());
            let tx = done_tx.clone();
            let wake = outbox.wake.clone();
            tokio::spawn(async move {
                let result = match tokio::time::timeout(Duration::from_secs(60), delivery).await {
                    Ok(r) => r,
                    Err(_) => Err(Failure::transient("no answer in 60 s")),
                };
                let now = crate::clock::unix_now_ms();
                let outcome = match result {
                    Ok(()) => Outcome::Sent,
                    Err(f) if f.permanent => Outcome::GiveUp(f.message),
                    Err(f) if now.saturating_sub(d.created_ms) > GIVE_UP_AFTER_MS => {
                        Outcome::GiveUp(format!("{} (retried for a day)", f.message))
                    }
                    Err(f) => Outcome::Retry(f.message, now + retry_delay_ms(d.attempts)),
                };
                let _ = tx.send((d, outcome));
                wake.notify_one();
            });
        }
        let c = conn.clone();
        // A message due already waits for its channel's pace (the slot above) or for the
        // delivery in flight (which wakes the loop): only a retry to come sets the time here.
        if let Ok(Ok(Some(next))) = tokio::task::spawn_blocking(move || next_wake(&lock(&c))).await
        {
            if next > now {
                wake_at = Some(wake_at.map_or(next, |w| w.min(next)));
            }
        }
        let now = crate::clock::unix_now_ms();
        let sleep = wake_at.map_or(Duration::from_secs(60), |at| {
            Duration::from_millis(at.saturating_sub(now).clamp(50, 60_000))
        });
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = outbox.wake.notified() => {}
            () = tokio::time::sleep(sleep) => {}
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn record(
    conn: &Arc<Mutex<Connection>>,
    d: &Due,
    outcome: Outcome,
    now: u64,
    retention: Retention,
) {
    let (id, channel) = (d.message.id, d.message.channel.clone());
    match &outcome {
        Outcome::Sent => {
            tracing::info!(target: "rempart::outbox", channel, message = id, "delivered")
        }
        Outcome::Retry(e, _) => {
            tracing::warn!(target: "rempart::outbox", channel, message = id, error = %e, attempt = d.attempts + 1, "not delivered, will retry")
        }
        Outcome::GiveUp(e) => {
            tracing::error!(target: "rempart::outbox", channel, message = id, error = %e, "not delivered, given up")
        }
    }
    let c = conn.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let conn = lock(&c);
        if retention == Retention::Delete && !matches!(outcome, Outcome::Retry(..)) {
            return conn.execute("DELETE FROM outbox WHERE id = ?1", [id as i64]);
        }
        match outcome {
            Outcome::Sent => conn.execute(
                "UPDATE outbox SET state = 'sent', done_ms = ?2, attempts = attempts + 1, last_error = NULL WHERE id = ?1",
                params![id as i64, now as i64],
            ),
            // A newer message of the group may have replaced it meanwhile: it goes out at
            // the retry, with the newer content.
            Outcome::Retry(e, next) => conn.execute(
                "UPDATE outbox SET state = 'pending', next_ms = ?2, attempts = attempts + 1, last_error = ?3 WHERE id = ?1",
                params![id as i64, next as i64, e],
            ),
            Outcome::GiveUp(e) => conn.execute(
                "UPDATE outbox SET state = 'failed', done_ms = ?2, attempts = attempts + 1, last_error = ?3 WHERE id = ?1",
                params![id as i64, now as i64, e],
            ),
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_slow_down_and_stop_growing() {
        assert_eq!(retry_delay_ms(0), 30_000);
        assert_eq!(retry_delay_ms(1), 60_000);
        assert_eq!(retry_delay_ms(5), 960_000);
        assert_eq!(retry_delay_ms(6), 30 * 60_000);
        assert_eq!(retry_delay_ms(40), 30 * 60_000);
    }

    #[test]
    fn a_channel_sends_its_rate_per_minute_spread_and_one_at_a_time() {
        let mut p = Pacing::default();
        for i in 0..3 {
            let at = 1_000 + i * 20_000;
            assert!(p.may_send("mail", 3, at));
            p.sent.entry("mail".into()).or_default().push_back(at);
            assert!(!p.may_send("mail", 3, at + 19_999), "spread: 20 s apart");
        }
        assert!(!p.may_send("mail", 3, 60_000), "three in the minute");
        assert_eq!(p.next_slot("mail", 3), Some(61_000));
        assert!(p.may_send("mail", 3, 61_000), "the first left the window");
        p.in_flight.insert("hook".into(), 1);
        assert!(!p.may_send("hook", 10, 61_000), "one in flight per channel");
    }

    #[test]
    fn a_waiting_message_is_replaced_by_the_newer_one_of_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.db");
        let outbox = Outbox::open(&path).unwrap();
        outbox.put("astreinte", "incident-1", "opened".into(), 10);
        outbox.put("astreinte", "incident-1", "raised".into(), 11);
        outbox.put("astreinte", "incident-2", "other".into(), 12);
        outbox.put("siem", "incident-1", "opened".into(), 13);
        outbox.flush();
        let conn = open_connection(&path).unwrap();
        let rows = due(&conn, 100).unwrap();
        let got: Vec<(&str, &str, &str, u64)> = rows
            .iter()
            .map(|d| {
                (
                    d.message.channel.as_str(),
                    d.message.group.as_str(),
                    d.message.payload.as_str(),
                    d.message.version,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("astreinte", "incident-1", "raised", 1),
                ("astreinte", "incident-2", "other", 0),
                ("siem", "incident-1", "opened", 0),
            ]
        );
        assert_eq!(outbox.counts().unwrap().pending, 3);
        // What was being sent when the process stopped is pending again after a restart.
        conn.execute("UPDATE outbox SET state = 'sending' WHERE id = 1", [])
            .unwrap();
        drop(outbox);
        let reopened = Outbox::open(&path).unwrap();
        assert_eq!(reopened.counts().unwrap().pending, 3);
        assert_eq!(due(&conn, 100).unwrap().len(), 3);
    }
}
