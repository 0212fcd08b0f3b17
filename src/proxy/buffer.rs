//! Request-body buffering: a body is read whole, at the client's pace, before its request
//! asks the origin for a slot, so a slow upload holds a few kilobytes of the gateway and
//! nothing of the origin (nginx does the same by default). A body stays in memory up to
//! `memory_per_body` bytes while the gateway's memory for bodies (`memory_total`) lasts;
//! beyond either, it goes to an unnamed file (deleted at creation, mode 0600) in a private
//! directory (mode 0700), within `disk_total` bytes; past that the request is refused (the
//! caller answers 503). Every byte held is accounted for while the body lives and given back
//! when it is dropped; the totals are gauges.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::body::RequestBodyError;

/// Bytes read back from disk per chunk.
const DISK_CHUNK: usize = 64 * 1024;

/// Where and how much bodies may be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Bytes of one body kept in memory; a larger body goes to disk.
    pub memory_per_body: u64,
    /// Bytes of all bodies kept in memory.
    pub memory_total: u64,
    /// Bytes of all bodies on disk.
    pub disk_total: u64,
    /// Private directory of the spilled bodies.
    pub dir: PathBuf,
}

/// The gateway's store of request bodies.
#[derive(Debug)]
pub struct BodyStore {
    settings: StoreSettings,
    memory_used: AtomicU64,
    disk_used: AtomicU64,
    metrics: crate::metrics::BodyStoreMetrics,
}

/// Why a body could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading the body from the client failed (too large, too slow, gone).
    #[error(transparent)]
    Body(#[from] RequestBodyError),
    /// Memory and disk for bodies are used up.
    #[error("request-body store full")]
    Full,
    /// The disk failed.
    #[error("request-body store: {0}")]
    Io(#[from] io::Error),
}

/// Bytes of the store a body holds, given back when it is dropped.
#[derive(Debug)]
struct Lease {
    store: Arc<BodyStore>,
    memory: u64,
    disk: u64,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.store.release_memory(self.memory);
        self.store.release_disk(self.disk);
    }
}

/// A stored body, read back chunk by chunk when forwarded.
#[derive(Debug)]
pub struct Stored {
    data: Data,
    remaining: u64,
    _lease: Lease,
}

#[derive(Debug)]
enum Data {
    /// In memory, in one piece.
    Whole(Option<Bytes>),
    Disk {
        file: tokio::fs::File,
        buf: Vec<u8>,
    },
}

impl Stored {
    /// Bytes not read back yet.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Whether the body went to disk.
    #[cfg(test)]
    fn on_disk(&self) -> bool {
        matches!(self.data, Data::Disk { .. })
    }

    /// The whole body at once when it is in memory, in one piece, and at most `max` bytes
    /// (what the upstream client sends in the same write as the head).
    pub fn take_small(&mut self, max: u64) -> Option<Bytes> {
        if self.remaining > max {
            return None;
        }
        let Data::Whole(whole) = &mut self.data else {
            return None;
        };
        let chunk = whole.take()?;
        self.remaining = 0;
        Some(chunk)
    }

    /// The next chunk; `None` at the end.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        match &mut self.data {
            Data::Whole(whole) => {
                self.remaining = 0;
                Poll::Ready(whole.take().map(Ok))
            }
            Data::Disk { file, buf } => {
                let want = usize::try_from(self.remaining)
                    .unwrap_or(DISK_CHUNK)
                    .min(DISK_CHUNK);
                buf.resize(want, 0);
                let mut read = tokio::io::ReadBuf::new(&mut buf[..]);
                match tokio::io::AsyncRead::poll_read(Pin::new(file), cx, &mut read) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
                    Poll::Ready(Ok(())) if read.filled().is_empty() => Poll::Ready(Some(Err(
                        io::Error::new(io::ErrorKind::UnexpectedEof, "stored body cut short"),
                    ))),
                    Poll::Ready(Ok(())) => {
                        let chunk = Bytes::copy_from_slice(read.filled());
                        self.remaining = self.remaining.saturating_sub(chunk.len() as u64);
                        Poll::Ready(Some(Ok(chunk)))
                    }
                }
            }
        }
    }
}

impl BodyStore {
    /// A store with `settings`, reporting to `metrics`.
    pub fn new(settings: StoreSettings, metrics: crate::metrics::BodyStoreMetrics) -> Arc<Self> {
        Arc::new(Self {
            settings,
            memory_used: AtomicU64::new(0),
            disk_used: AtomicU64::new(0),
            metrics,
        })
    }

    /// The settings.
    pub fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    /// Bytes held in memory and on disk now.
    pub fn used(&self) -> (u64, u64) {
        (
            self.memory_used.load(Ordering::Relaxed),
            self.disk_used.load(Ordering::Relaxed),
        )
    }

    fn reserve(counter: &AtomicU64, n: u64, limit: u64) -> bool {
        counter
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(n).filter(|total| *total <= limit)
            })
            .is_ok()
    }

    fn reserve_memory(&self, n: u64) -> bool {
        let ok = Self::reserve(&self.memory_used, n, self.settings.memory_total);
        if ok {
            self.metrics.memory_bytes.inc_by(gauge(n));
        }
        ok
    }

    fn reserve_disk(&self, n: u64) -> bool {
        let ok = Self::reserve(&self.disk_used, n, self.settings.disk_total);
        if ok {
            self.metrics.disk_bytes.inc_by(gauge(n));
        }
        ok
    }

    fn release_memory(&self, n: u64) {
        if n > 0 {
            self.memory_used.fetch_sub(n, Ordering::Relaxed);
            self.metrics.memory_bytes.dec_by(gauge(n));
        }
    }

    fn release_disk(&self, n: u64) {
        if n > 0 {
            self.disk_used.fetch_sub(n, Ordering::Relaxed);
            self.metrics.disk_bytes.dec_by(gauge(n));
        }
    }

    /// Stores a body already read whole, in memory, when the store has room for it there
    /// (`None`: use `collect`, which may go to disk).
    pub fn store_whole(self: &Arc<Self>, bytes: &Bytes) -> Option<Stored> {
        let n = bytes.len() as u64;
        if n > self.settings.memory_per_body || !self.reserve_memory(n) {
            return None;
        }
        self.metrics.in_memory.inc();
        Some(Stored {
            data: Data::Whole(Some(bytes.clone())),
            remaining: n,
            _lease: Lease {
                store: self.clone(),
                memory: n,
                disk: 0,
            },
        })
    }

    /// Reads `body` whole (a `proxy::body::RequestBody`: its limits and pace apply as it
    /// arrives) and stores it.
    pub async fn collect<B>(self: &Arc<Self>, body: &mut B) -> Result<Stored, StoreError>
    where
        B: http_body::Body<Data = Bytes, Error = RequestBodyError> + Unpin,
    {
        use http_body_util::BodyExt;
        let mut lease = Lease {
            store: self.clone(),
            memory: 0,
            disk: 0,
        };
        // Copied into one buffer: a chunk handed over by the server shares (and would keep
        // alive) the whole read buffer it came in, so a body trickled in tiny pieces would
        // hold far more memory than its size.
        let mut memory = bytes::BytesMut::new();
        let mut file: Option<tokio::fs::File> = None;
        let mut len = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            let n = data.len() as u64;
            len += n;
            if let Some(f) = file.as_mut() {
                if !self.reserve_disk(n) {
                    self.metrics.refused.inc();
                    return Err(StoreError::Full);
                }
                lease.disk += n;
                f.write_all(&data).await?;
                continue;
            }
            if len <= self.settings.memory_per_body && self.reserve_memory(n) {
                lease.memory += n;
                // Grown as bytes arrive, never to what the client announced: a body
                // announced large and sent slowly holds what it sent.
                memory.extend_from_slice(&data);
                continue;
            }
            // Too large for memory, or memory is used up: to disk, with what came so far.
            if !self.reserve_disk(len) {
                self.metrics.refused.inc();
                return Err(StoreError::Full);
            }
            lease.disk += len;
            let mut f = self.spill_file().await?;
            f.write_all(&memory).await?;
            memory = bytes::BytesMut::new();
            f.write_all(&data).await?;
            self.release_memory(std::mem::take(&mut lease.memory));
            file = Some(f);
        }
        let data = match file {
            Some(mut f) => {
                f.flush().await?;
                f.seek(io::SeekFrom::Start(0)).await?;
                self.metrics.on_disk.inc();
                Data::Disk {
                    file: f,
                    buf: Vec::new(),
                }
            }
            None => {
                self.metrics.in_memory.inc();
                Data::Whole(Some(memory.freeze()))
            }
        };
        Ok(Stored {
            data,
            remaining: len,
            _lease: lease,
        })
    }

    /// A new unnamed file in the private directory (made, mode 0700, on first use).
    async fn spill_file(&self) -> io::Result<tokio::fs::File> {
        let dir = self.settings.dir.clone();
        let file = tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::DirBuilderExt;
            if !dir.is_dir() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&dir)?;
            }
            tempfile::tempfile_in(&dir)
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))??;
        Ok(tokio::fs::File::from_std(file))
    }
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a stored body to its end.
    async fn read_all(stored: &mut Stored) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(chunk) = std::future::poll_fn(|cx| stored.poll_chunk(cx)).await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    type TestBody = http_body_util::StreamBody<
        futures_util::stream::Iter<
            std::vec::IntoIter<Result<http_body::Frame<Bytes>, RequestBodyError>>,
        >,
    >;

    /// A body made of `chunks`, failing with `TooLarge` past `limit` bytes (as
    /// `RequestBody` does).
    async fn body_of(chunks: Vec<Bytes>, limit: u64) -> TestBody {
        let mut seen = 0u64;
        let frames: Vec<_> = chunks
            .into_iter()
            .map(|c| {
                seen += c.len() as u64;
                if seen > limit {
                    Err(RequestBodyError::TooLarge)
                } else {
                    Ok(http_body::Frame::data(c))
                }
            })
            .collect();
        http_body_util::StreamBody::new(futures_util::stream::iter(frames))
    }

    fn store(dir: &std::path::Path, per_body: u64, memory: u64, disk: u64) -> Arc<BodyStore> {
        BodyStore::new(
            StoreSettings {
                memory_per_body: per_body,
                memory_total: memory,
                disk_total: disk,
                dir: dir.join("bodies"),
            },
            crate::metrics::BodyStoreMetrics::default(),
        )
    }

    #[tokio::test]
    async fn small_bodies_stay_in_memory_and_large_ones_go_to_disk() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), 1024, 1 << 20, 1 << 20);
        let mut small = s
            .collect(
                &mut body_of(
                    vec![Bytes::from_static(b"abc"), Bytes::from_static(b"def")],
                    1 << 20,
                )
                .await,
            )
            .await
            .unwrap();
        assert!(!small.on_disk());
        assert_eq!(s.used(), (6, 0));
        assert_eq!(read_all(&mut small).await.unwrap(), b"abcdef");
        drop(small);
        assert_eq!(s.used(), (0, 0));
        let big: Vec<Bytes> = (0..10).map(|i| Bytes::from(vec![b'a' + i; 300])).collect();
        let want: Vec<u8> = big.iter().flat_map(|b| b.to_vec()).collect();
        let mut stored = s.collect(&mut body_of(big, 1 << 20).await).await.unwrap();
        assert!(stored.on_disk());
        assert_eq!(s.used(), (0, 3000));
        assert_eq!(read_all(&mut stored).await.unwrap(), want);
        // The directory is private, and holds no named file.
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(dir.path().join("bodies")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        assert_eq!(
            std::fs::read_dir(dir.path().join("bodies"))
                .unwrap()
                .count(),
            0
        );
        drop(stored);
        assert_eq!(s.used(), (0, 0));
    }

    #[tokio::test]
    async fn memory_and_disk_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), 1024, 1500, 2000);
        let chunk = |n: usize| vec![Bytes::from(vec![b'x'; n])];
        let a = s
            .collect(&mut body_of(chunk(1000), 1 << 20).await)
            .await
            .unwrap();
        assert!(!a.on_disk());
        // Memory for bodies is used up: the next small one goes to disk.
        let b = s
            .collect(&mut body_of(chunk(1000), 1 << 20).await)
            .await
            .unwrap();
        assert!(b.on_disk());
        // Disk is used up too: refused.
        let c = s.collect(&mut body_of(chunk(1500), 1 << 20).await).await;
        assert!(matches!(c, Err(StoreError::Full)), "{c:?}");
        assert_eq!(s.used(), (1000, 1000));
        drop((a, b));
        assert_eq!(s.used(), (0, 0));
        // The route's limit still applies while reading.
        let d = s.collect(&mut body_of(chunk(600), 500).await).await;
        assert!(
            matches!(d, Err(StoreError::Body(RequestBodyError::TooLarge))),
            "{d:?}"
        );
        assert_eq!(s.used(), (0, 0));
    }
}
