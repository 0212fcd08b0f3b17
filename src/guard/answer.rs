//! One answer on a guarded route, as it streams: the records it carries (the elements of a
//! JSON array, the persons whose personal data it shows) and what the route does with the
//! personal data it finds: count it, mask it in the stream, or cut the answer.
//!
//! Masking and cutting hold back the bytes the scanner has not decided yet (at most a few
//! hundred, `Scanner::decided`): an item cut by a chunk boundary is masked whole, and an
//! answer is cut before the first byte of an item it must not show. Pure: chunks in, bytes
//! out.

use super::distinct::{spread, Distinct};
use super::json::ArrayCounter;
use super::scan::{Found, Kind, Scanner};

/// A set of kinds of personal data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct KindSet(u8);

impl KindSet {
    /// No kind.
    pub const NONE: KindSet = KindSet(0);

    /// The set with `kind` added.
    pub fn with(self, kind: Kind) -> Self {
        Self(self.0 | 1 << kind as u8)
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: Kind) -> bool {
        self.0 & (1 << kind as u8) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The kinds in the set, in `Kind::ALL` order.
    pub fn kinds(self) -> impl Iterator<Item = Kind> {
        Kind::ALL.into_iter().filter(move |k| self.contains(*k))
    }

    /// Parses a kind's name (`nir`, `iban`, `card`, `phone`, `email`, `birth_date`).
    pub fn parse_kind(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// What an answer's scan does with personal data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PiiPolicy {
    /// Scan the answer (counting the persons it shows).
    pub scan: bool,
    /// Kinds replaced in the stream.
    pub mask: KindSet,
    /// Kinds that cut the answer.
    pub block: KindSet,
}

impl PiiPolicy {
    /// Whether bytes must be held back until decided.
    fn holds_back(&self) -> bool {
        !self.mask.is_empty() || !self.block.is_empty()
    }
}

/// What the stream does after a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Go on.
    Go,
    /// Cut the answer: an item of this kind must not be shown.
    Cut(Kind),
}

/// The scan of one answer.
#[derive(Debug)]
pub struct AnswerScan {
    policy: PiiPolicy,
    scanner: Option<Scanner>,
    json: Option<ArrayCounter>,
    /// Items found, per kind (`Kind as usize`).
    found: [u64; Kind::COUNT],
    /// Distinct items, per kind (made at the first item).
    distinct: Option<Box<[Distinct; Kind::COUNT]>>,
    /// The distinct items of each kind, exactly, up to `EXACT_ITEMS` (then the estimate).
    exact: Option<Box<[Exact; Kind::COUNT]>>,
    /// Bytes fed but not yet given out (held back while undecided), and their offset.
    held: Vec<u8>,
    held_at: u64,
    /// Items to mask that reach into the held bytes.
    masks: Vec<(u64, u64)>,
    cut: Option<Kind>,
}

impl AnswerScan {
    /// A scan under `policy`, counting the array at `json_path` when given.
    pub fn new(policy: PiiPolicy, json_path: Option<&str>) -> Self {
        Self {
            policy,
            scanner: (policy.scan || policy.holds_back()).then(Scanner::new),
            json: json_path.map(ArrayCounter::new),
            found: [0; Kind::COUNT],
            distinct: None,
            exact: None,
            held: Vec::new(),
            held_at: 0,
            masks: Vec::new(),
            cut: None,
        }
    }

    /// Whether the scan may change or hold back bytes (the answer's length becomes unknown).
    pub fn rewrites(&self) -> bool {
        self.policy.holds_back()
    }

    /// Feeds the answer's next chunk; when the scan `rewrites`, the bytes that may go
    /// downstream now are appended to `out`; otherwise `out` is left alone (the chunk goes as
    /// it is).
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Step {
        if let Some(kind) = self.cut {
            return Step::Cut(kind);
        }
        if let Some(json) = &mut self.json {
            json.feed(chunk);
        }
        let Some(scanner) = &mut self.scanner else {
            return Step::Go;
        };
        let policy = self.policy;
        let (found, masks, cut) = (&mut self.found, &mut self.masks, &mut self.cut);
        let (distinct, exact) = (&mut self.distinct, &mut self.exact);
        let mut on_item = |f: Found| {
            found[f.kind as usize] += 1;
            remember(distinct, exact, &f);
            if policy.block.contains(f.kind) && cut.is_none() {
                *cut = Some(f.kind);
            } else if policy.mask.contains(f.kind) {
                masks.push((f.start, f.end));
            }
        };
        scanner.feed(chunk, &mut on_item);
        if !policy.holds_back() {
            return Step::Go;
        }
        self.held.extend_from_slice(chunk);
        if let Some(kind) = self.cut {
            return Step::Cut(kind);
        }
        let decided = self.scanner.as_ref().map_or(0, Scanner::decided);
        self.give_out(decided, out);
        Step::Go
    }

    /// The end of the answer: the last items are decided; the held bytes are appended to
    /// `out`, unless the answer must be cut.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Step {
        if let Some(kind) = self.cut {
            return Step::Cut(kind);
        }
        if let Some(scanner) = &mut self.scanner {
            let policy = self.policy;
            let (found, masks, cut) = (&mut self.found, &mut self.masks, &mut self.cut);
            let (distinct, exact) = (&mut self.distinct, &mut self.exact);
            scanner.finish(&mut |f: Found| {
                found[f.kind as usize] += 1;
                remember(distinct, exact, &f);
                if policy.block.contains(f.kind) && cut.is_none() {
                    *cut = Some(f.kind);
                } else if policy.mask.contains(f.kind) {
                    masks.push((f.start, f.end));
                }
            });
        }
        if let Some(kind) = self.cut {
            return Step::Cut(kind);
        }
        let end = self.held_at + self.held.len() as u64;
        self.give_out(end, out);
        Step::Go
    }

    /// Gives out the held bytes before stream offset `upto`, masked.
    fn give_out(&mut self, upto: u64, out: &mut Vec<u8>) {
        let n = usize::try_from(upto.saturating_sub(self.held_at))
            .unwrap_or(usize::MAX)
            .min(self.held.len());
        if n == 0 {
            return;
        }
        let at = self.held_at;
        let from = out.len();
        out.extend_from_slice(&self.held[..n]);
        for &(start, end) in &self.masks {
            let s = start.max(at);
            let e = end.min(at + n as u64);
            if s >= e {
                continue;
            }
            for b in &mut out[from + (s - at) as usize..from + (e - at) as usize] {
                if b.is_ascii_alphanumeric() {
                    *b = b'X';
                }
            }
        }
        self.held.drain(..n);
        self.held_at += n as u64;
        let done = self.held_at;
        self.masks.retain(|&(_, end)| end > done);
    }

    /// Items found so far, per kind (`Kind as usize`).
    pub fn found(&self) -> [u64; Kind::COUNT] {
        self.found
    }

    /// Persons whose data the answer showed: the most distinct items of any one kind (a
    /// record carries one NIR, one phone...; counting every kind would count a person
    /// several times, and the same NIR twice is one person). Estimated, never above the
    /// items found.
    pub fn persons(&self) -> u64 {
        let (Some(distinct), Some(exact)) = (&self.distinct, &self.exact) else {
            return 0;
        };
        Kind::ALL
            .iter()
            .map(|k| {
                let i = *k as usize;
                if exact[i].len() < EXACT_ITEMS {
                    let mut values = exact[i].clone();
                    values.sort_unstable();
                    values.dedup();
                    values.len() as u64
                } else {
                    distinct[i]
                        .estimate()
                        .clamp(EXACT_ITEMS as u64, self.found[i])
                }
            })
            .max()
            .unwrap_or(0)
    }

    /// The distinct items of each kind (for the journal), when any was found.
    pub fn take_distinct(&mut self) -> Option<Box<[Distinct; Kind::COUNT]>> {
        self.distinct.take()
    }

    /// Elements of the JSON array counted so far, when a path was given.
    pub fn json_records(&self) -> Option<u64> {
        self.json.as_ref().map(ArrayCounter::count)
    }
}

/// Precision of the per-kind distinct counts (256 bytes each, about 6.5 % standard error).
pub const PERSONS_PRECISION: u8 = 8;

/// Distinct items of a kind counted exactly in one answer (beyond: estimated).
const EXACT_ITEMS: usize = 1024;

/// The values of a kind seen in one answer, deduplicated when counted (an answer shows few).
type Exact = Vec<u64>;

/// Counts `f` among the distinct items of its kind.
fn remember(
    distinct: &mut Option<Box<[Distinct; Kind::COUNT]>>,
    exact: &mut Option<Box<[Exact; Kind::COUNT]>>,
    f: &Found,
) {
    let i = f.kind as usize;
    distinct
        .get_or_insert_with(|| Box::new(std::array::from_fn(|_| Distinct::new(PERSONS_PRECISION))))
        [i]
        .insert(spread(f.value));
    let exact = exact.get_or_insert_with(Default::default);
    if exact[i].len() < EXACT_ITEMS {
        if exact[i].capacity() == 0 {
            // A page shows a few dozen items of a kind: one allocation, not four.
            exact[i].reserve_exact(64);
        }
        exact[i].push(f.value);
        if exact[i].len() == EXACT_ITEMS {
            // Full of repeats, perhaps: keep the distinct ones.
            exact[i].sort_unstable();
            exact[i].dedup();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mask: &[Kind], block: &[Kind]) -> PiiPolicy {
        PiiPolicy {
            scan: true,
            mask: mask.iter().fold(KindSet::NONE, |s, k| s.with(*k)),
            block: block.iter().fold(KindSet::NONE, |s, k| s.with(*k)),
        }
    }

    /// Streams `body` cut at `splits` (sorted offsets); the bytes out and the last step.
    fn stream(p: PiiPolicy, body: &[u8], splits: &[usize]) -> (Vec<u8>, Step, AnswerScan) {
        let mut scan = AnswerScan::new(p, Some("data"));
        let mut out = Vec::new();
        let mut last = 0;
        for &s in splits.iter().chain(std::iter::once(&body.len())) {
            if let Step::Cut(k) = scan.feed(&body[last..s], &mut out) {
                return (out, Step::Cut(k), scan);
            }
            last = s;
        }
        let step = scan.finish(&mut out);
        if !scan.rewrites() {
            out = body.to_vec();
        }
        (out, step, scan)
    }

    const BODY: &str = r#"{"data":[{"nir":"1 85 05 78 006 084 91","tel":"06 12 34 56 78"},{"nir":"185057800608491","mail":"jean.dupont@example.fr"}],"page":1}"#;

    #[test]
    fn masking_hides_the_kinds_asked_and_keeps_the_length() {
        let (out, step, scan) = stream(policy(&[Kind::Nir], &[]), BODY.as_bytes(), &[]);
        assert_eq!(step, Step::Go);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.len(), BODY.len());
        assert!(text.contains(r#""nir":"X XX XX XX XXX XXX XX""#), "{text}");
        assert!(text.contains(r#""nir":"XXXXXXXXXXXXXXX""#), "{text}");
        assert!(
            text.contains("06 12 34 56 78"),
            "phones are not masked here"
        );
        assert_eq!(scan.found()[Kind::Nir as usize], 2);
        assert_eq!(
            scan.persons(),
            1,
            "the same NIR twice, in two writings: one person"
        );
        assert_eq!(scan.json_records(), Some(2));
    }

    #[test]
    fn any_chunking_gives_the_same_masked_bytes() {
        let p = policy(&[Kind::Nir, Kind::Phone, Kind::Email], &[]);
        let (whole, _, _) = stream(p, BODY.as_bytes(), &[]);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..500 {
            let mut splits = Vec::new();
            for _ in 0..(seed % 7) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                splits.push((seed % BODY.len() as u64) as usize);
            }
            splits.sort_unstable();
            let (out, step, scan) = stream(p, BODY.as_bytes(), &splits);
            assert_eq!(step, Step::Go);
            assert_eq!(out, whole, "splits {splits:?}");
            assert_eq!(scan.found(), [2, 0, 0, 1, 1, 0]);
            seed = seed.wrapping_add(1);
        }
        assert!(!String::from_utf8(whole).unwrap().contains("dupont"));
    }

    #[test]
    fn an_answer_is_cut_before_the_first_item_it_must_not_show() {
        for splits in [vec![], vec![20], vec![30, 31, 32], vec![60]] {
            let (out, step, _) = stream(policy(&[], &[Kind::Nir]), BODY.as_bytes(), &splits);
            assert_eq!(step, Step::Cut(Kind::Nir));
            let text = String::from_utf8(out).unwrap();
            assert!(
                BODY.starts_with(&text) && text.len() < BODY.find("1 85").unwrap(),
                "{splits:?}: {text}"
            );
        }
        let (out, step, _) = stream(policy(&[], &[Kind::Card]), BODY.as_bytes(), &[7]);
        assert_eq!((out.as_slice(), step), (BODY.as_bytes(), Step::Go));
    }

    #[test]
    fn counting_alone_passes_chunks_through_at_once() {
        let p = PiiPolicy {
            scan: true,
            ..PiiPolicy::default()
        };
        let mut scan = AnswerScan::new(p, None);
        let mut out = Vec::new();
        assert_eq!(scan.feed(&BODY.as_bytes()[..50], &mut out), Step::Go);
        assert!(out.is_empty(), "nothing copied: the chunk goes as it is");
        assert!(!scan.rewrites());
    }
}
