//! Optional disk tier of the stale copies: every copy kept in memory is also written to a
//! directory (one file per page, bounded in total), so copies survive a restart of the
//! gateway in the middle of an outage and outlive memory evictions. Writes and pruning run on
//! one thread of their own; a read happens only when the origin failed and memory had no
//! copy. Files carry a small binary format, parsed with bounds checks (a damaged file is
//! ignored and removed).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};

use super::stale::Entry;

const MAGIC: &[u8; 6] = b"RSTL1\n";

/// Writes waiting for the disk thread at most (beyond, copies stay in memory only).
const QUEUE: usize = 1024;

enum Op {
    Put(u64, Arc<Entry>),
    Remove(u64),
}

/// The disk tier.
pub struct DiskStore {
    dir: PathBuf,
    tx: std::sync::Mutex<mpsc::SyncSender<Op>>,
}

impl std::fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStore").field("dir", &self.dir).finish()
    }
}

fn file(dir: &Path, key: u64) -> PathBuf {
    dir.join(format!("{key:016x}.stale"))
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(b);
}

/// Serialises an entry.
pub fn encode(e: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(e.body.len() + 512);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&e.status.to_le_bytes());
    out.extend_from_slice(&e.stored_at.to_le_bytes());
    out.extend_from_slice(&e.usable_until.to_le_bytes());
    let (t, h, p) = e.url();
    put_bytes(&mut out, t.as_bytes());
    put_bytes(&mut out, h.as_bytes());
    put_bytes(&mut out, p.as_bytes());
    out.extend_from_slice(&u32::try_from(e.headers.len()).unwrap_or(0).to_le_bytes());
    for (n, v) in &e.headers {
        put_bytes(&mut out, n.as_str().as_bytes());
        put_bytes(&mut out, v.as_bytes());
    }
    let vary = e.vary();
    out.extend_from_slice(&u32::try_from(vary.len()).unwrap_or(0).to_le_bytes());
    for (n, v) in vary {
        put_bytes(&mut out, n.as_str().as_bytes());
        match v {
            Some(v) => {
                out.push(1);
                put_bytes(&mut out, v.as_bytes());
            }
            None => out.push(0),
        }
    }
    put_bytes(&mut out, &e.body);
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }
}

/// Parses an entry; `None` for anything damaged.
pub fn decode(data: &[u8]) -> Option<Entry> {
    let mut r = Reader(data);
    if r.take(MAGIC.len())? != MAGIC {
        return None;
    }
    let status = r.u16()?;
    let stored_at = r.u64()?;
    let usable_until = r.u64()?;
    let url = (r.str()?.into(), r.str()?.into(), r.str()?.into());
    let n = r.u32()? as usize;
    let mut headers = Vec::with_capacity(n.min(256));
    for _ in 0..n {
        let name = HeaderName::from_bytes(r.bytes()?).ok()?;
        let value = HeaderValue::from_bytes(r.bytes()?).ok()?;
        headers.push((name, value));
    }
    let n = r.u32()? as usize;
    let mut vary = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let name = HeaderName::from_bytes(r.bytes()?).ok()?;
        let value = match r.take(1)?[0] {
            1 => Some(HeaderValue::from_bytes(r.bytes()?).ok()?),
            _ => None,
        };
        vary.push((name, value));
    }
    let body = Bytes::copy_from_slice(r.bytes()?);
    r.0.is_empty()
        .then(|| Entry::from_parts(url, status, headers, body, vary, stored_at, usable_until))
}

fn prune(dir: &Path, max_bytes: u64) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = read
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "stale"))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((m.modified().ok()?, m.len(), e.path()))
        })
        .collect();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    if total <= max_bytes {
        return;
    }
    // Oldest first, down to 90 % of the bound.
    files.sort_by_key(|f| f.0);
    for (_, len, path) in files {
        if total <= max_bytes / 10 * 9 {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total = total.saturating_sub(len);
        }
    }
}

impl DiskStore {
    /// Opens (creating) `dir`, holding at most `max_bytes` of copies.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(dir)?;
        let (tx, rx) = mpsc::sync_channel::<Op>(QUEUE);
        let thread_dir = dir.to_owned();
        std::thread::Builder::new()
            .name("rempart-stale-disk".into())
            .spawn(move || {
                prune(&thread_dir, max_bytes);
                let mut written = 0u64;
                while let Ok(op) = rx.recv() {
                    match op {
                        Op::Put(key, entry) => {
                            let path = file(&thread_dir, key);
                            let tmp = path.with_extension("tmp");
                            let data = encode(&entry);
                            written += data.len() as u64;
                            if std::fs::write(&tmp, &data)
                                .and_then(|()| std::fs::rename(&tmp, &path))
                                .is_err()
                            {
                                let _ = std::fs::remove_file(&tmp);
                            }
                            // Check the bound every tenth of it written.
                            if written > max_bytes / 10 {
                                written = 0;
                                prune(&thread_dir, max_bytes);
                            }
                        }
                        Op::Remove(key) => {
                            let _ = std::fs::remove_file(file(&thread_dir, key));
                        }
                    }
                }
            })?;
        Ok(Arc::new(Self {
            dir: dir.to_owned(),
            tx: std::sync::Mutex::new(tx),
        }))
    }

    fn send(&self, op: Op) {
        if let Ok(tx) = self.tx.lock() {
            let _ = tx.try_send(op);
        }
    }

    /// Writes a copy (in the background; dropped when the queue is full).
    pub fn put(&self, key: u64, entry: Arc<Entry>) {
        self.send(Op::Put(key, entry));
    }

    /// Removes a copy (in the background).
    pub fn remove(&self, key: u64) {
        self.send(Op::Remove(key));
    }

    /// Reads a copy; a damaged file is removed.
    pub fn get(&self, key: u64) -> Option<Entry> {
        let path = file(&self.dir, key);
        let data = std::fs::read(&path).ok()?;
        let entry = decode(&data);
        if entry.is_none() {
            let _ = std::fs::remove_file(&path);
        }
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::degraded::stale::{keep, key, Keep, StaleCache};

    /// What a 200 GET answer with these headers may be kept as (a minute of stale use).
    fn kept(req: &http::HeaderMap, resp: &http::HeaderMap) -> Keep {
        keep(
            &http::Method::GET,
            req,
            200,
            resp,
            10,
            std::time::Duration::from_secs(60),
        )
        .unwrap()
    }

    #[test]
    fn round_trip_and_damage() {
        let mut resp = http::HeaderMap::new();
        resp.insert("content-type", HeaderValue::from_static("text/html"));
        resp.insert("vary", HeaderValue::from_static("Accept-Language"));
        let mut req = http::HeaderMap::new();
        req.insert("accept-language", HeaderValue::from_static("fr"));
        let k = kept(&req, &resp);
        let cache = StaleCache::new(1 << 20, 1 << 16, None);
        let mut r = cache
            .recorder(&key("t", "h", "/p?x=1"), 200, &resp, k, 10)
            .unwrap();
        assert!(r.push(b"<html>page</html>"));
        let entry = r.into_entry().unwrap();
        let data = encode(&entry);
        let back = decode(&data).unwrap();
        assert_eq!(back.body, entry.body);
        assert_eq!(back.status, 200);
        assert_eq!(back.headers, entry.headers);
        assert!(back.matches(&req));
        assert_eq!(back.url(), entry.url());
        for cut in [0, 5, 20, data.len() - 1] {
            assert!(decode(&data[..cut]).is_none(), "cut at {cut}");
        }
        let mut bad = data.clone();
        bad[0] = b'X';
        assert!(decode(&bad).is_none());
    }

    #[test]
    fn copies_survive_a_new_cache() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskStore::open(dir.path(), 1 << 20).unwrap();
        let resp = http::HeaderMap::new();
        let req = http::HeaderMap::new();
        let k = kept(&req, &resp);
        let first = StaleCache::new(1 << 20, 1 << 16, Some(disk.clone()));
        let mut r = first
            .recorder(&key("t", "h", "/"), 200, &resp, k, 10)
            .unwrap();
        assert!(r.push(b"hello"));
        r.finish();
        let path = file(dir.path(), key("t", "h", "/").hash());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !path.exists() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        // A fresh memory tier (a restart) finds the copy on disk.
        let second = StaleCache::new(1 << 20, 1 << 16, Some(disk));
        let e = second.lookup(&key("t", "h", "/"), &req, 20).unwrap();
        assert_eq!(&e.body[..], b"hello");
        assert!(second.lookup(&key("t", "h", "/other"), &req, 20).is_none());
        assert!(
            second.lookup(&key("t", "h", "/"), &req, 100).is_none(),
            "expired"
        );
    }
}
