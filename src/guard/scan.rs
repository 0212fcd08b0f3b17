//! The personal-data scanner: finds French NIR (social-security numbers, with their key),
//! French IBANs, payment cards, French phone numbers and e-mail addresses in a byte stream, in
//! any of their usual writings, chunk by chunk: an item cut by a chunk boundary is found once,
//! whole. Numbers that only look like these (wrong keys, order and invoice numbers,
//! timestamps, SIRET, EAN barcodes, dates) are not counted: every kind has a checksum or a
//! structure that must hold, and an item must stand alone (no letter or digit glued to it).
//!
//! Pure: bytes in, items out; the caller decides what to do with them (count, mask, block).
//! Cost: one table lookup per byte outside candidates; a candidate is read at most once.

/// What an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// French social-security number (NIR), key checked.
    Nir,
    /// French IBAN (`FR` + 25 characters), mod-97 checked.
    Iban,
    /// Payment card number (Visa, Mastercard, Amex ranges), Luhn checked.
    Card,
    /// French phone number (`0X`, `+33`, `0033`, `+33 (0)`).
    Phone,
    /// E-mail address.
    Email,
    /// A date of birth: a date whose context names it (a JSON key such as `date_naissance`
    /// or `birthDate`, "Date de naissance :", "Né(e) le").
    BirthDate,
}

impl Kind {
    /// How many kinds.
    pub const COUNT: usize = 6;
    /// Every kind.
    pub const ALL: [Kind; Kind::COUNT] = [
        Kind::Nir,
        Kind::Iban,
        Kind::Card,
        Kind::Phone,
        Kind::Email,
        Kind::BirthDate,
    ];

    /// Name in reports and configuration.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Nir => "nir",
            Kind::Iban => "iban",
            Kind::Card => "card",
            Kind::Phone => "phone",
            Kind::Email => "email",
            Kind::BirthDate => "birth_date",
        }
    }
}

/// One item found: its kind and where it is in the stream (absolute byte offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Kind.
    pub kind: Kind,
    /// Offset of its first byte in the stream.
    pub start: u64,
    /// Offset just past its last byte.
    pub end: u64,
    /// A hash of its value, whatever its writing (letters and digits only, lower case; a
    /// phone's last nine digits), to count distinct items. Not a secret: never store it.
    pub value: u64,
}

/// The hash of `item`'s value (see `Found::value`): FNV-1a of its letters and digits.
fn value_hash(kind: Kind, item: &[u8]) -> u64 {
    let mut h = FnvValue::new(kind);
    if kind == Kind::Phone {
        // The last nine digits, whatever came before (`+33`, `0033`, `0`).
        let mut last9 = [0u8; 9];
        let mut n = 0usize;
        for b in item.iter().copied().filter(u8::is_ascii_digit) {
            last9[n % 9] = b;
            n += 1;
        }
        for k in 0..9 {
            h.eat(last9[(n + k) % 9]);
        }
    } else {
        for &b in item {
            if is_alnum(b) {
                h.eat(b);
            }
        }
    }
    h.0
}

/// `value_hash` of a number, from the digit values a matcher read (its item is these digits
/// and separators; a phone passes its last nine).
fn digits_hash(kind: Kind, digits: &[u8]) -> u64 {
    let mut h = FnvValue::new(kind);
    for d in digits {
        h.eat(b'0' + d);
    }
    h.0
}

/// FNV-1a over the lower-case bytes of a value, seeded with its kind.
struct FnvValue(u64);

impl FnvValue {
    fn new(kind: Kind) -> Self {
        Self(0xcbf2_9ce4_8422_2325 ^ kind as u64)
    }

    #[inline(always)]
    fn eat(&mut self, b: u8) {
        self.0 ^= u64::from(b.to_ascii_lowercase());
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
    }
}

/// Longest item, in bytes, with its separators (`+33 (0)6 12 34 56 78` is 20, a grouped
/// IBAN 33, an e-mail address up to 100).
const MAX_ITEM: usize = 128;
/// Longest local part of an e-mail address (RFC 5321).
const MAX_LOCAL: usize = 64;

/// A streaming scanner: feed it chunks, then `finish`.
#[derive(Debug, Default)]
pub struct Scanner {
    /// The bytes still needed: the end of what was fed (a cut item, the byte before where
    /// scanning resumes, which decides whether an item stands alone, and an e-mail's local
    /// part before its `@`).
    carry: Vec<u8>,
    /// Stream offset of `carry[0]`.
    base: u64,
    /// Where scanning resumes (every position before it is decided).
    resume: u64,
    /// End of the last item reported (no item overlaps it).
    reported: u64,
    /// Scanning resumes inside a run of letters and digits, which no item may start in.
    skipping: bool,
}

impl Scanner {
    /// A scanner at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Scans `chunk`, the stream's next bytes; calls `found` for each item complete in what
    /// was fed so far.
    pub fn feed(&mut self, chunk: &[u8], found: &mut impl FnMut(Found)) {
        if self.carry.is_empty() {
            self.scan_and_keep(chunk, false, found);
        } else {
            // The kept bytes and the new ones, side by side (the carry is small).
            let mut joined = std::mem::take(&mut self.carry);
            joined.extend_from_slice(chunk);
            self.scan_and_keep(&joined, false, found);
        }
    }

    /// Stream offset before which everything is decided: no item reported from now on
    /// starts before it (the bytes before it may be let go; a masking caller holds back the
    /// rest).
    pub fn decided(&self) -> u64 {
        self.base
    }

    /// The end of the stream: items cut by it are complete now.
    pub fn finish(&mut self, found: &mut impl FnMut(Found)) {
        let carry = std::mem::take(&mut self.carry);
        self.scan_and_keep(&carry, true, found);
        self.carry.clear();
    }

    /// Scans `buf` (which starts at `self.base`) from `self.resume`, then keeps what the next
    /// chunk needs.
    fn scan_and_keep(&mut self, buf: &[u8], last: bool, found: &mut impl FnMut(Found)) {
        let from = usize::try_from(self.resume - self.base).unwrap_or(usize::MAX);
        let resume = scan(
            buf,
            self.base,
            from,
            &mut self.reported,
            &mut self.skipping,
            last,
            found,
        );
        self.resume = self.base + resume as u64;
        // The byte before where scanning resumes, an e-mail's local part before its `@`, and
        // room for one before the next chunk's first `@`.
        let keep = resume
            .saturating_sub(MAX_LOCAL + 1)
            .min(buf.len().saturating_sub(MAX_ITEM + 1));
        let mut carry = std::mem::take(&mut self.carry);
        carry.clear();
        carry.extend_from_slice(&buf[keep..]);
        self.base += keep as u64;
        self.carry = carry;
    }
}

/// Counts the items of each kind in `bytes` (a whole file or answer).
pub fn count(bytes: &[u8]) -> [u64; Kind::COUNT] {
    let mut counts = [0u64; Kind::COUNT];
    let mut s = Scanner::new();
    let mut add = |f: Found| counts[f.kind as usize] += 1;
    s.feed(bytes, &mut add);
    s.finish(&mut add);
    counts
}

const DIGIT: u8 = 1;
const LETTER: u8 = 2;
/// Bytes that may start an item: digits, `+`, `@` (an e-mail is found from its `@`), `F`.
const TRIGGER: u8 = 4;
/// Bytes of an e-mail's local part.
const LOCAL: u8 = 8;

const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut c = 0;
        if b.is_ascii_digit() {
            c |= DIGIT | TRIGGER | LOCAL;
        }
        if b.is_ascii_alphabetic() {
            c |= LETTER | LOCAL;
        }
        // (`F` of an IBAN: written in capitals.)
        if b == b'+' || b == b'@' || b == b'F' {
            c |= TRIGGER;
        }
        if matches!(b, b'.' | b'_' | b'%' | b'+' | b'-') {
            c |= LOCAL;
        }
        t[i] = c;
        i += 1;
    }
    t
};

fn is_alnum(b: u8) -> bool {
    CLASS[usize::from(b)] & (DIGIT | LETTER) != 0
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The bytes of `w` below `n` (at most 128) flagged in their high bit. The lowest flag is
/// exact (a borrow only runs upwards from a flagged byte), higher ones may be false.
#[inline(always)]
fn below(w: u64, n: u8) -> u64 {
    w.wrapping_sub(ONES * u64::from(n)) & !w & HIGHS
}

/// The first byte at `from` or later that may start an item (`TRIGGER`), eight bytes at a
/// time: digits, `+`, `@`, `F`.
fn next_trigger(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(word) = buf.get(i..i + 8) {
        let w = u64::from_le_bytes(word.try_into().unwrap_or_default());
        let flags = below(w ^ (ONES * u64::from(b'0')), 10)
            | below(w ^ (ONES * u64::from(b'+')), 1)
            | below(w ^ (ONES * u64::from(b'@')), 1)
            | below(w ^ (ONES * u64::from(b'F')), 1);
        if flags != 0 {
            return Some(i + (flags.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    buf[i.min(buf.len())..]
        .iter()
        .position(|b| CLASS[usize::from(*b)] & TRIGGER != 0)
        .map(|p| i + p)
}

/// What a matcher says at one position.
enum Match {
    /// An item ends here (exclusive), with its value's hash when the matcher has it already.
    Item(Kind, usize, Option<u64>),
    /// Not an item.
    No,
    /// The buffer ends before it can tell.
    More,
}

/// Scans `buf` (stream offset `base`) for items starting at index `from` or later (an
/// e-mail's local part may lie before it, not before `reported`), first skipping the rest of
/// a run of letters and digits when `skipping`. Reports items, advances `reported` past
/// each, and returns where scanning must resume (the first undecided position, or the end).
#[allow(clippy::too_many_arguments)]
fn scan(
    buf: &[u8],
    base: u64,
    from: usize,
    reported: &mut u64,
    skipping: &mut bool,
    last: bool,
    found: &mut impl FnMut(Found),
) -> usize {
    let mut i = from.min(buf.len());
    if *skipping {
        // The end of a run of letters and digits that began in an earlier chunk.
        while i < buf.len() && is_alnum(buf[i]) {
            i += 1;
        }
        if i == buf.len() && !last {
            return i;
        }
        *skipping = false;
    }
    while i < buf.len() {
        // The next byte that may start an item.
        match next_trigger(buf, i) {
            Some(p) => i = p,
            None => return buf.len(),
        }
        let b = buf[i];
        let alone = i == 0 || !is_alnum(buf[i - 1]);
        let at = if b == b'@' {
            email(buf, i, base, *reported, last)
        } else if !alone {
            Match::No
        } else if b.is_ascii_digit() {
            match birth_date(buf, i, last) {
                Match::No => number(buf, i, last),
                found => found,
            }
        } else if b == b'+' {
            number(buf, i, last)
        } else {
            iban(buf, i, last)
        };
        match at {
            Match::Item(kind, end, hash) => {
                let start = if kind == Kind::Email {
                    local_start(buf, i)
                } else {
                    i
                };
                let value = hash.unwrap_or_else(|| value_hash(kind, &buf[start..end]));
                debug_assert_eq!(value, value_hash(kind, &buf[start..end]));
                found(Found {
                    kind,
                    start: base + start as u64,
                    end: base + end as u64,
                    value,
                });
                *reported = base + end as u64;
                i = end;
            }
            Match::More => return i,
            Match::No => {
                // Past the whole run of letters and digits: nothing inside it stands alone.
                i += 1;
                while i < buf.len() && is_alnum(buf[i]) {
                    i += 1;
                }
                if i == buf.len() && !last {
                    // The run may go on in the next chunk: go on skipping it there.
                    *skipping = true;
                    return i;
                }
            }
        }
    }
    buf.len()
}

/// Whether an item ending at `end` stands alone: no letter or digit right after it. `None`
/// when the buffer ends there (and the stream may go on).
fn ends_alone(buf: &[u8], end: usize, last: bool) -> Option<bool> {
    match buf.get(end) {
        Some(b) => Some(!is_alnum(*b)),
        None if last => Some(true),
        None => None,
    }
}

/// Digits read from `at`, allowing one kind of separator (space, `.` or `-`) between
/// groups; at most `max` digits. The digits, their count and where the reading stopped.
struct Digits {
    d: [u8; 24],
    n: usize,
    end: usize,
    /// The buffer ended while digits could still follow.
    cut: bool,
}

fn read_digits(buf: &[u8], at: usize, max: usize, last: bool) -> Digits {
    let mut out = Digits {
        d: [0; 24],
        n: 0,
        end: at,
        cut: false,
    };
    let mut sep: Option<u8> = None;
    let mut i = at;
    while out.n < max.min(24) {
        let Some(&b) = buf.get(i) else {
            out.cut = !last;
            break;
        };
        if b.is_ascii_digit() {
            out.d[out.n] = b - b'0';
            out.n += 1;
            i += 1;
            out.end = i;
            continue;
        }
        let is_sep = matches!(b, b' ' | b'.' | b'-') && out.n > 0;
        if !is_sep || sep.is_some_and(|s| s != b) {
            break;
        }
        // A separator counts only when a digit follows it.
        match buf.get(i + 1) {
            Some(n) if n.is_ascii_digit() => {
                sep = Some(b);
                i += 1;
            }
            Some(_) => break,
            None => {
                out.cut = !last;
                break;
            }
        }
    }
    out
}

/// A number starting at `at` (a digit or `+`): NIR, card or phone.
fn number(buf: &[u8], at: usize, last: bool) -> Match {
    if buf[at] == b'+' || buf[at..].starts_with(b"0033") || buf.len() - at < 4 && !last {
        if let Some(m) = international_phone(buf, at, last) {
            return m;
        }
    }
    let digits = read_digits(buf, at, 20, last);
    if digits.cut {
        return Match::More;
    }
    let Some(alone) = ends_alone(buf, digits.end, last) else {
        return Match::More;
    };
    let d = &digits.d[..digits.n];
    if !alone {
        // `2A`/`2B` right after five digits (the `2` read as a sixth): born in Corsica.
        let corsica = d.len() == 6
            && d[5] == 2
            && matches!(buf.get(digits.end), Some(b'A' | b'a' | b'B' | b'b'));
        return if corsica {
            nir_with_corsica(buf, at, last)
        } else {
            Match::No
        };
    }
    let (kind, value) = match d.len() {
        10 if is_phone(d) => (Kind::Phone, &d[1..]),
        15 if is_nir(d) => (Kind::Nir, d),
        15 | 16 if is_card(d) => (Kind::Card, d),
        _ => return Match::No,
    };
    Match::Item(kind, digits.end, Some(digits_hash(kind, value)))
}

/// A French number written internationally: `+33 6 12 34 56 78`, `+33 (0)6 12 34 56 78`,
/// `+336…`, `0033 6…`. `None` when it is not one (another number may start here).
fn international_phone(buf: &[u8], at: usize, last: bool) -> Option<Match> {
    let prefix: &[u8] = if buf[at] == b'+' { b"+33" } else { b"0033" };
    let have = &buf[at..buf.len().min(at + prefix.len())];
    if have.len() < prefix.len() {
        return (!last && prefix.starts_with(have)).then_some(Match::More);
    }
    if have != prefix {
        return (buf[at] == b'+').then_some(Match::No);
    }
    let mut i = at + prefix.len();
    // An optional separator, then an optional "(0)".
    if matches!(buf.get(i), Some(b' ' | b'.' | b'-')) {
        i += 1;
    }
    if buf.get(i..i + 3) == Some(b"(0)") {
        i += 3;
        if matches!(buf.get(i), Some(b' ' | b'.' | b'-')) {
            i += 1;
        }
    } else if buf.len() < i + 3 && !last {
        return Some(Match::More);
    }
    let digits = read_digits(buf, i, 9, last);
    if digits.cut {
        return Some(Match::More);
    }
    let alone = match ends_alone(buf, digits.end, last) {
        Some(a) => a,
        None => return Some(Match::More),
    };
    let d = &digits.d[..digits.n];
    Some(
        if alone && d.len() == 9 && (1..=9).contains(&d[0]) && d[0] != 8 {
            Match::Item(Kind::Phone, digits.end, Some(digits_hash(Kind::Phone, d)))
        } else {
            Match::No
        },
    )
}

/// `0X XX XX XX XX`: a French number (`01`-`07`, `09`; not `08`, shared-cost and service
/// numbers printed by businesses, nor `00`).
fn is_phone(d: &[u8]) -> bool {
    d[0] == 0 && (1..=9).contains(&d[1]) && d[1] != 8
}

/// A NIR of 15 digits: sex (1, 2, or 7, 8 for a temporary number), year, month (01-12, or
/// 20, 30-42, 50-99 for unknown or special months), department and key (97 - N mod 97).
fn is_nir(d: &[u8]) -> bool {
    let num = |r: std::ops::Range<usize>| d[r].iter().fold(0u64, |n, x| n * 10 + u64::from(*x));
    if !matches!(d[0], 1 | 2 | 7 | 8) {
        return false;
    }
    let month = num(3..5);
    if !(matches!(month, 1..=12 | 20 | 30..=42) || month >= 50) {
        return false;
    }
    97 - num(0..13) % 97 == num(13..15)
}

/// A NIR born in Corsica: department `2A` or `2B` (the key is computed with 19 or 18 in its
/// place), e.g. `1 85 05 2A 006 084 KK`.
fn nir_with_corsica(buf: &[u8], at: usize, last: bool) -> Match {
    // Five digits (sex, year, month), then 2A/2B, then 8 digits.
    let head = read_digits(buf, at, 5, last);
    if head.cut {
        return Match::More;
    }
    if head.n != 5 {
        return Match::No;
    }
    let mut i = head.end;
    let sep = buf
        .get(i)
        .copied()
        .filter(|b| matches!(b, b' ' | b'.' | b'-'));
    if sep.is_some() {
        i += 1;
    }
    let Some(dept) = buf.get(i..i + 2) else {
        return if last { Match::No } else { Match::More };
    };
    let replaced = match dept {
        [b'2', b'A' | b'a'] => 19,
        [b'2', b'B' | b'b'] => 18,
        _ => return Match::No,
    };
    i += 2;
    if sep.is_some() {
        if buf.get(i) == sep.as_ref() {
            i += 1;
        } else if buf.len() <= i && !last {
            return Match::More;
        }
    }
    let tail = read_digits(buf, i, 8, last);
    if tail.cut {
        return Match::More;
    }
    let Some(alone) = ends_alone(buf, tail.end, last) else {
        return Match::More;
    };
    if !alone || tail.n != 8 {
        return Match::No;
    }
    let mut d = [0u8; 15];
    d[..5].copy_from_slice(&head.d[..5]);
    d[5] = replaced / 10;
    d[6] = replaced % 10;
    d[7..].copy_from_slice(&tail.d[..8]);
    if is_nir(&d) {
        Match::Item(Kind::Nir, tail.end, None)
    } else {
        Match::No
    }
}

/// Visa (4, 16 digits), Mastercard (51-55, 2221-2720, 16 digits), Amex (34, 37, 15 digits),
/// Luhn checked.
fn is_card(d: &[u8]) -> bool {
    let prefix = |n: usize| d[..n].iter().fold(0u32, |p, x| p * 10 + u32::from(*x));
    let range_ok = match d.len() {
        16 => d[0] == 4 || (51..=55).contains(&prefix(2)) || (2221..=2720).contains(&prefix(4)),
        15 => matches!(prefix(2), 34 | 37),
        _ => false,
    };
    range_ok && luhn(d)
}

fn luhn(d: &[u8]) -> bool {
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, x)| {
            let x = u32::from(*x);
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 {
                    y - 9
                } else {
                    y
                }
            } else {
                x
            }
        })
        .sum();
    sum % 10 == 0
}

/// A French IBAN at `at` (`F`): `FR` + 2 check digits + 23 characters, packed or in groups
/// of four separated by spaces, mod-97 checked.
fn iban(buf: &[u8], at: usize, last: bool) -> Match {
    // `FR` and two check digits first: most capital F start no IBAN.
    match buf.get(at..at + 4) {
        Some(head) => {
            if !(head[1] == b'R' && head[2].is_ascii_digit() && head[3].is_ascii_digit()) {
                return Match::No;
            }
        }
        None => {
            let head = &buf[at..];
            let fits = head.get(1).is_none_or(|b| *b == b'R')
                && head.iter().skip(2).all(u8::is_ascii_digit);
            return if last || !fits {
                Match::No
            } else {
                Match::More
            };
        }
    }
    let mut chars = [0u8; 27];
    let mut n = 0;
    let mut i = at;
    let mut sep: Option<u8> = None;
    if let Some(end) = iban_whole(buf, at, &mut chars) {
        // The usual writings, whole in the buffer: what the loop below would read.
        (n, i) = (27, end);
    }
    while n < 27 {
        let Some(&b) = buf.get(i) else {
            return if last { Match::No } else { Match::More };
        };
        if b.is_ascii_alphanumeric() {
            chars[n] = b.to_ascii_uppercase();
            n += 1;
            i += 1;
            continue;
        }
        // Separators only between groups of four.
        if b == b' ' && n % 4 == 0 && n > 0 && sep.is_none_or(|s| s == b) {
            sep = Some(b);
            i += 1;
            continue;
        }
        return Match::No;
    }
    if &chars[..2] != b"FR" || !chars[2].is_ascii_digit() || !chars[3].is_ascii_digit() {
        return Match::No;
    }
    let Some(alone) = ends_alone(buf, i, last) else {
        return Match::More;
    };
    if !alone {
        return Match::No;
    }
    if iban_mod97(&chars) == 1 {
        let mut h = FnvValue::new(Kind::Iban);
        for c in chars {
            h.eat(c);
        }
        Match::Item(Kind::Iban, i, Some(h.0))
    } else {
        Match::No
    }
}

/// The 27 characters of an IBAN at `at` written packed or in groups of four separated by
/// single spaces, upper-cased into `chars`, when the buffer holds it whole: where it ends.
fn iban_whole(buf: &[u8], at: usize, chars: &mut [u8; 27]) -> Option<usize> {
    let end = if buf.get(at + 4) == Some(&b' ') {
        let grouped = buf.get(at..at + 33)?;
        if [4, 9, 14, 19, 24, 29].iter().any(|k| grouped[*k] != b' ') {
            return None;
        }
        for (g, group) in grouped.chunks(5).enumerate() {
            let n = group.len().min(4);
            chars[g * 4..g * 4 + n].copy_from_slice(&group[..n]);
        }
        at + 33
    } else {
        chars.copy_from_slice(buf.get(at..at + 27)?);
        at + 27
    };
    let mut alnum = true;
    for c in chars.iter_mut() {
        alnum &= is_alnum(*c);
        *c = c.to_ascii_uppercase();
    }
    alnum.then_some(end)
}

/// For each upper-case IBAN character: the factor that makes room for it in a decimal
/// number (10 for a digit, 100 for a letter, written 10 to 35) and its value (0 elsewhere).
const IBAN_DIGITS: [(u8, u8); 256] = {
    let mut t = [(1u8, 0u8); 256];
    let mut b = 0;
    while b < 256 {
        if b >= b'0' as usize && b <= b'9' as usize {
            t[b] = (10, (b - b'0' as usize) as u8);
        } else if b >= b'A' as usize && b <= b'Z' as usize {
            t[b] = (100, (b - b'A' as usize + 10) as u8);
        }
        b += 1;
    }
    t
};

/// The IBAN's number mod 97: its last 23 characters then its first four, letters written
/// 10 to 35 (ISO 13616). Reduced every four characters (at most eight digits: far below
/// 2^64).
fn iban_mod97(chars: &[u8; 27]) -> u64 {
    let mut rem = 0u64;
    let (head, bban) = chars.split_at(4);
    for group in bban.chunks(4).chain(std::iter::once(head)) {
        for c in group {
            let (factor, value) = IBAN_DIGITS[usize::from(*c)];
            rem = rem * u64::from(factor) + u64::from(value);
        }
        rem %= 97;
    }
    rem
}

/// French month names, without and with their accents (lower case).
const MONTHS: [&[u8]; 15] = [
    b"janvier",
    b"fevrier",
    "février".as_bytes(),
    b"mars",
    b"avril",
    b"mai",
    b"juin",
    b"juillet",
    b"aout",
    "août".as_bytes(),
    b"septembre",
    b"octobre",
    b"novembre",
    b"decembre",
    "décembre".as_bytes(),
];

/// What names a date of birth right before it: a key or a label (lower case), its last
/// words.
const BIRTH_CONTEXT: [&[u8]; 16] = [
    b"naissance",
    b"birthdate",
    b"birth_date",
    b"birth-date",
    b"date of birth",
    b"date_of_birth",
    b"dateofbirth",
    b"dob",
    b"birthday",
    b"ne le",
    b"nee le",
    b"ne(e) le",
    "né le".as_bytes(),
    "née le".as_bytes(),
    "né(e) le".as_bytes(),
    b"date_naiss",
];

/// Whether the bytes before `at` name a date of birth: once separators (spaces, quotes,
/// `:`, `=`) and up to four HTML tags are stripped, they end with a key or label of
/// `BIRTH_CONTEXT` (any case). Looks back at most 64 bytes (the scanner keeps that much).
fn names_birth_date(buf: &[u8], at: usize) -> bool {
    let mut end = at;
    let floor = at.saturating_sub(64);
    for _ in 0..6 {
        while end > floor
            && matches!(
                buf[end - 1],
                b' ' | b'\t' | b'"' | b'\'' | b':' | b'=' | b'\n' | b'\r'
            )
        {
            end -= 1;
        }
        if end > floor && buf[end - 1] == b'>' {
            match buf[floor..end].iter().rposition(|b| *b == b'<') {
                Some(p) => end = floor + p,
                None => return false,
            }
        } else {
            break;
        }
    }
    let before = &buf[floor..end];
    // Every key and label ends with one of these letters: most words before a date do not.
    if !matches!(
        before.last().map(u8::to_ascii_lowercase),
        Some(b'e' | b'h' | b'b' | b'y' | b's')
    ) {
        return false;
    }
    BIRTH_CONTEXT.iter().any(|k| {
        before.len() >= k.len() && before[before.len() - k.len()..].eq_ignore_ascii_case(k)
    })
}

/// A number of 1 to `max` digits at `at`: its value and where it ends.
fn small_number(buf: &[u8], at: usize, max: usize) -> Option<(u32, usize)> {
    let mut v = 0u32;
    let mut i = at;
    while i < buf.len() && i - at < max && buf[i].is_ascii_digit() {
        v = v * 10 + u32::from(buf[i] - b'0');
        i += 1;
    }
    (i > at).then_some((v, i))
}

/// A date of birth at `at` (a digit): `12/03/1985`, `12-03-1985`, `12.03.1985`,
/// `1985-03-12`, `12 mars 1985`, whose context names it (`names_birth_date`). Ordinary dates
/// are not dates of birth.
fn birth_date(buf: &[u8], at: usize, last: bool) -> Match {
    // Most digits start no date: one or two digits then a separator, or four then `-`.
    let sep = |i: usize| matches!(buf.get(at + i), Some(b'/' | b'-' | b'.' | b' '));
    let digit = |i: usize| buf.get(at + i).is_some_and(u8::is_ascii_digit);
    let shaped = sep(1)
        || (digit(1) && sep(2))
        || (digit(1) && digit(2) && digit(3) && buf.get(at + 4) == Some(&b'-'));
    if !shaped && buf.len() - at >= 5 {
        return Match::No;
    }
    // Enough bytes to read the longest writing, unless the stream ends.
    if buf.len() - at < 20 && !last {
        return Match::More;
    }
    let Some((first, i)) = small_number(buf, at, 4) else {
        return Match::No;
    };
    let date = if i - at == 4 {
        // 1985-03-12
        (|| {
            let i = if buf.get(i) == Some(&b'-') {
                i + 1
            } else {
                return None;
            };
            let (m, i) = small_number(buf, i, 2)?;
            let i = if buf.get(i) == Some(&b'-') {
                i + 1
            } else {
                return None;
            };
            let (d, i) = small_number(buf, i, 2)?;
            Some((d, m, first, i))
        })()
    } else if i - at <= 2 {
        (|| {
            let sep = *buf.get(i)?;
            if matches!(sep, b'/' | b'-' | b'.') {
                // 12/03/1985
                let (m, j) = small_number(buf, i + 1, 2)?;
                if buf.get(j) != Some(&sep) {
                    return None;
                }
                let (y, k) = small_number(buf, j + 1, 4)?;
                (k - j - 1 == 4).then_some((first, m, y, k))
            } else if sep == b' ' {
                // 12 mars 1985 (most numbers followed by a space are not: a phone's groups,
                // "18 h 30")
                let rest = &buf[i + 1..];
                if !matches!(
                    rest.first().map(u8::to_ascii_lowercase),
                    Some(b'j' | b'f' | b'm' | b'a' | b's' | b'o' | b'n' | b'd')
                ) {
                    return None;
                }
                let (m, name) = MONTHS.iter().enumerate().find(|(_, name)| {
                    rest.len() > name.len()
                        && rest[..name.len()].eq_ignore_ascii_case(name)
                        && rest[name.len()] == b' '
                })?;
                let month = [1, 2, 2, 3, 4, 5, 6, 7, 8, 8, 9, 10, 11, 12, 12][m];
                let j = i + 1 + name.len() + 1;
                let (y, k) = small_number(buf, j, 4)?;
                (k - j == 4).then_some((first, month, y, k))
            } else {
                None
            }
        })()
    } else {
        None
    };
    let Some((day, month, year, end)) = date else {
        return Match::No;
    };
    if !(1..=31).contains(&day) || !(1..=12).contains(&month) || !(1900..=2030).contains(&year) {
        return Match::No;
    }
    match ends_alone(buf, end, last) {
        Some(true) if names_birth_date(buf, at) => Match::Item(Kind::BirthDate, end, None),
        Some(_) => Match::No,
        None => Match::More,
    }
}

/// Where the local part of the e-mail whose `@` is at `at` starts.
fn local_start(buf: &[u8], at: usize) -> usize {
    let mut s = at;
    while s > 0 && at - s < MAX_LOCAL && CLASS[usize::from(buf[s - 1])] & LOCAL != 0 {
        s -= 1;
    }
    // Not starting with a dot.
    while s < at && buf[s] == b'.' {
        s += 1;
    }
    s
}

/// An e-mail address around the `@` at `at`: a local part of 1 to 64 characters before it,
/// a domain of at least two labels after it, the last one of 2 or more letters.
fn email(buf: &[u8], at: usize, base: u64, reported: u64, last: bool) -> Match {
    let start = local_start(buf, at);
    if start == at || base + (start as u64) < reported {
        return Match::No;
    }
    if start > 0 && CLASS[usize::from(buf[start - 1])] & LOCAL != 0 {
        // The local part is longer than an address's may be.
        return Match::No;
    }
    let mut i = at + 1;
    let mut labels = 0;
    let mut tld_letters = true;
    let mut label_len = 0;
    loop {
        let Some(&b) = buf.get(i) else {
            if !last {
                return Match::More;
            }
            break;
        };
        if b.is_ascii_alphanumeric() || (b == b'-' && label_len > 0) {
            label_len += 1;
            tld_letters &= b.is_ascii_alphabetic();
            i += 1;
        } else if b == b'.'
            && label_len > 0
            && buf.get(i + 1).is_some_and(|n| n.is_ascii_alphanumeric())
        {
            labels += 1;
            label_len = 0;
            tld_letters = true;
            i += 1;
        } else if b == b'.' && buf.get(i + 1).is_none() && !last {
            return Match::More;
        } else {
            break;
        }
        if i - at > 100 {
            return Match::No;
        }
    }
    if labels >= 1 && label_len >= 2 && tld_letters {
        Match::Item(Kind::Email, i, None)
    } else {
        Match::No
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(Kind, String)> {
        let mut out = Vec::new();
        let mut s = Scanner::new();
        let bytes = text.as_bytes();
        let mut push = |f: Found| {
            out.push((f.kind, text[f.start as usize..f.end as usize].to_owned()));
        };
        s.feed(bytes, &mut push);
        s.finish(&mut push);
        out
    }

    /// A valid NIR from its first 13 digits.
    fn nir(first13: &str) -> String {
        let n: u64 = first13.parse().unwrap();
        format!("{first13}{:02}", 97 - n % 97)
    }

    #[test]
    fn each_kind_in_its_usual_writings() {
        let n = nir("1850578006084");
        let spaced = format!(
            "{} {} {} {} {} {} {}",
            &n[0..1],
            &n[1..3],
            &n[3..5],
            &n[5..7],
            &n[7..10],
            &n[10..13],
            &n[13..15]
        );
        let cases: Vec<(String, Kind)> = vec![
            (n.clone(), Kind::Nir),
            (spaced, Kind::Nir),
            ("FR7630006000011234567890189".into(), Kind::Iban),
            ("FR76 3000 6000 0112 3456 7890 189".into(), Kind::Iban),
            ("4111111111111111".into(), Kind::Card),
            ("4111 1111 1111 1111".into(), Kind::Card),
            ("5555-5555-5555-4444".into(), Kind::Card),
            ("378282246310005".into(), Kind::Card),
            ("06 12 34 56 78".into(), Kind::Phone),
            ("06.12.34.56.78".into(), Kind::Phone),
            ("0612345678".into(), Kind::Phone),
            ("01-23-45-67-89".into(), Kind::Phone),
            ("+33 6 12 34 56 78".into(), Kind::Phone),
            ("+33612345678".into(), Kind::Phone),
            ("+33 (0)6 12 34 56 78".into(), Kind::Phone),
            ("0033 6 12 34 56 78".into(), Kind::Phone),
            ("jeanne.dupont@ville-exemple.fr".into(), Kind::Email),
            ("a+b_c@mail.example.org".into(), Kind::Email),
        ];
        for (item, kind) in cases {
            for text in [
                item.clone(),
                format!("\"x\":\"{item}\","),
                format!("<td>{item}</td>"),
                format!("Contact : {item}. Merci"),
            ] {
                let got = kinds(&text);
                assert_eq!(got, vec![(kind, item.clone())], "{text:?}");
            }
        }
    }

    #[test]
    fn corsica_nirs_use_19_and_18_for_their_key() {
        // 2A -> 19, 2B -> 18 in the key computation.
        let key = |with: &str| {
            let n: u64 = with.parse().unwrap();
            97 - n % 97
        };
        let a = format!("185052A006084{:02}", key("1850519006084"));
        let b = format!("2 85 05 2B 006 084 {:02}", key("2850518006084"));
        assert_eq!(kinds(&a), vec![(Kind::Nir, a.clone())]);
        assert_eq!(kinds(&b), vec![(Kind::Nir, b.clone())]);
    }

    #[test]
    fn look_alikes_are_not_counted() {
        let mut wrong_key = nir("1850578006084");
        wrong_key.replace_range(13..15, "00");
        let decoys = [
            wrong_key.as_str(),
            "FR7630006000011234567890188", // IBAN, wrong check
            "4111111111111112",            // card, Luhn fails
            "1234567812345670",            // Luhn fine, no card range
            "73282932000074",              // SIRET (14 digits)
            "3017620422003",               // EAN-13
            "1700000000000",               // timestamp (ms)
            "1700000000",                  // timestamp (s)
            "0812345678",                  // 08: services
            "0012345678",
            "Commande 2024-000123",
            "Facture n° 00456789",
            "12/05/1985",
            "2024-05-12T10:00:00Z",
            "6A12345678901", // parcel
            "x06 12 34 56 78",
            "06 12 34 56 789",
            "06 12.34 56 78",
            "@ville.fr",
            "a@b",
            "a@b.c",
            "FR12",
        ];
        for d in decoys {
            assert_eq!(kinds(d), vec![], "{d:?}");
        }
    }

    /// Items of every kind, for the boundary property.
    fn sample() -> String {
        format!(
            "{{\"nir\":\"{}\",\"iban\":\"FR76 3000 6000 0112 3456 7890 189\",\"tel\":\"+33 (0)6 12 34 56 78\",\"mail\":\"jeanne.dupont@ville-exemple.fr\",\"carte\":\"4111 1111 1111 1111\",\"cmd\":\"2024-000123\",\"tel2\":\"06.12.34.56.78\"}}",
            nir("2690499123456")
        )
    }

    proptest::proptest! {
        /// Wherever the chunk boundaries fall, the same items are found, once each.
        #[test]
        fn chunk_boundaries_never_lose_or_repeat_an_item(cuts in proptest::collection::vec(0usize..300, 0..12)) {
            let text = sample();
            let bytes = text.as_bytes();
            let whole = kinds(&text);
            proptest::prop_assert_eq!(whole.len(), 6, "{:?}", whole);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut s = Scanner::new();
            let mut got = Vec::new();
            let mut push = |f: Found| got.push((f.kind, text[f.start as usize..f.end as usize].to_owned()));
            let mut at = 0;
            for c in cuts {
                s.feed(&bytes[at..c.max(at)], &mut push);
                at = c.max(at);
            }
            s.feed(&bytes[at..], &mut push);
            s.finish(&mut push);
            proptest::prop_assert_eq!(got, whole);
        }

        /// The word-at-a-time search finds the first trigger byte, as a byte-by-byte one.
        #[test]
        fn the_trigger_search_is_exact(
            bytes in proptest::collection::vec(proptest::sample::select(b"09/:+*,@?AEFGaf \xc3\xa9\x80\xff".to_vec()), 0..64),
            from in 0usize..70,
        ) {
            let naive = bytes
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, b)| CLASS[usize::from(**b)] & TRIGGER != 0)
                .map(|(i, _)| i);
            proptest::prop_assert_eq!(next_trigger(&bytes, from), naive);
        }

        /// The IBAN check's arithmetic: the number written out in decimal, mod 97.
        #[test]
        fn the_iban_remainder_is_the_numbers(chars in proptest::collection::vec(proptest::sample::select(b"0123456789ABCDEFZ".to_vec()), 27)) {
            let chars: [u8; 27] = chars.try_into().unwrap();
            let written: String = chars[4..]
                .iter()
                .chain(&chars[..4])
                .map(|c| if c.is_ascii_digit() { (*c as char).to_string() } else { (u32::from(c - b'A') + 10).to_string() })
                .collect();
            let naive = written.bytes().fold(0u64, |r, d| (r * 10 + u64::from(d - b'0')) % 97);
            proptest::prop_assert_eq!(iban_mod97(&chars), naive);
        }

        /// Any bytes: never a panic, items within the stream and in order.
        #[test]
        fn arbitrary_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400), cut in 0usize..400) {
            let cut = cut.min(bytes.len());
            let mut s = Scanner::new();
            let mut last_end = 0;
            let mut check = |f: Found| {
                assert!(f.start >= last_end && f.end > f.start && f.end as usize <= bytes.len());
                last_end = f.end;
            };
            s.feed(&bytes[..cut], &mut check);
            s.feed(&bytes[cut..], &mut check);
            s.finish(&mut check);
        }
    }

    /// A small deterministic generator for the corpus properties.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn digits(&mut self, n: usize) -> String {
            (0..n)
                .map(|_| char::from(b'0' + self.below(10) as u8))
                .collect()
        }
    }

    /// Splits `digits` in groups of `sizes` joined by `sep`.
    fn grouped(digits: &str, sizes: &[usize], sep: &str) -> String {
        let mut out = Vec::new();
        let mut at = 0;
        for s in sizes {
            out.push(&digits[at..at + s]);
            at += s;
        }
        out.join(sep)
    }

    /// A valid item of `kind`, written one of its usual ways.
    fn item(g: &mut Gen, kind: Kind) -> String {
        let sep = [" ", ".", "-", ""][g.below(4) as usize];
        match kind {
            Kind::Nir => {
                let month = 1 + g.below(12);
                let first = format!("{}{}{month:02}{}", 1 + g.below(2), g.digits(2), g.digits(8));
                let n = nir(&first);
                let sep = if sep == "." || sep == "-" { " " } else { sep };
                grouped(&n, &[1, 2, 2, 2, 3, 3, 2], sep)
            }
            Kind::Iban => {
                // Bank, branch, account, then the check digits that make it valid.
                let bban = g.digits(23);
                let mut rem = 0u64;
                for c in format!("{bban}152700").bytes() {
                    rem = (rem * 10 + u64::from(c - b'0')) % 97;
                }
                let full = format!("FR{:02}{bban}", 98 - rem);
                if g.below(2) == 0 {
                    full
                } else {
                    full.as_bytes()
                        .chunks(4)
                        .map(|c| std::str::from_utf8(c).unwrap())
                        .collect::<Vec<_>>()
                        .join(" ")
                }
            }
            Kind::Card => {
                let mut d = format!("4{}", g.digits(14));
                let check = (0..10).find(|c| luhn_str(&format!("{d}{c}"))).unwrap();
                d.push(char::from(b'0' + check as u8));
                let sep = if sep == "." { " " } else { sep };
                grouped(&d, &[4, 4, 4, 4], sep)
            }
            Kind::Phone => {
                let d = format!(
                    "0{}{}",
                    [1, 2, 3, 4, 5, 6, 7, 9][g.below(8) as usize],
                    g.digits(8)
                );
                match g.below(4) {
                    0 => grouped(&d, &[2, 2, 2, 2, 2], sep),
                    1 => format!("+33 {}", grouped(&d[1..], &[1, 2, 2, 2, 2], " ")),
                    2 => format!("+33 (0){}", grouped(&d[1..], &[1, 2, 2, 2, 2], " ")),
                    _ => format!("0033{}", &d[1..]),
                }
            }
            Kind::BirthDate => {
                let (d, m, y) = (1 + g.below(28), 1 + g.below(12), 1930 + g.below(90));
                let months = [
                    "janvier",
                    "février",
                    "mars",
                    "avril",
                    "mai",
                    "juin",
                    "juillet",
                    "août",
                    "septembre",
                    "octobre",
                    "novembre",
                    "décembre",
                ];
                let date = match g.below(4) {
                    0 => format!("{d:02}/{m:02}/{y}"),
                    1 => format!("{y}-{m:02}-{d:02}"),
                    2 => format!("{d:02}.{m:02}.{y}"),
                    _ => format!("{d} {} {y}", months[m as usize - 1]),
                };
                // With what names it: a JSON key, a label, a table cell.
                match g.below(5) {
                    0 => format!("\",\"date_naissance\": \"{date}"),
                    1 => format!("\",\"birthDate\":\"{date}"),
                    2 => format!("Date de naissance : {date}"),
                    3 => format!("Né(e) le {date}"),
                    _ => format!("<td>Date de naissance</td><td>{date}</td><td>"),
                }
            }
            Kind::Email => {
                let names = ["jeanne", "jean.dupont", "m.martin", "contact", "a_b+c"];
                let domains = ["ville-exemple.fr", "mail.example.org", "agglo.test.fr"];
                format!(
                    "{}{}@{}",
                    names[g.below(5) as usize],
                    g.below(100),
                    domains[g.below(3) as usize]
                )
            }
        }
    }

    fn luhn_str(d: &str) -> bool {
        let digits: Vec<u8> = d.bytes().map(|b| b - b'0').collect();
        luhn(&digits)
    }

    /// Something that only looks like an item.
    fn decoy(g: &mut Gen) -> String {
        match g.below(8) {
            0 => format!("CMD-{}-{}", 2020 + g.below(6), g.digits(6)),
            1 => format!("Facture n° {}", g.digits(8)),
            2 => format!("{}", 1_600_000_000_000 + g.below(200_000_000_000)),
            3 => format!(
                "{:02}/{:02}/{}",
                1 + g.below(28),
                1 + g.below(12),
                1930 + g.below(90)
            ),
            4 => format!("{}{}", 3, g.digits(12)),
            5 => g.digits(14),
            6 => format!("6A{}", g.digits(11)),
            _ => format!("v{}.{}.{}", g.below(10), g.below(100), g.below(1000)),
        }
    }

    #[test]
    fn dates_of_birth_count_only_where_their_context_names_them() {
        let births = [
            r#"{"nom":"Martin","date_naissance":"12/03/1985"}"#,
            r#"{"birthDate": "1985-03-12", "x": 1}"#,
            "Date de naissance : 12.03.1985",
            "Né(e) le 3 mars 1985 à Nantes",
            "née le 28 février 1961",
            "<tr><th>Date de naissance</th><td>12/03/1985</td></tr>",
            "<b>DOB:</b> 01-12-1999",
        ];
        for b in births {
            assert_eq!(count(b.as_bytes())[Kind::BirthDate as usize], 1, "{b}");
        }
        let ordinary = [
            r#"{"date_creation":"12/03/1985"}"#,
            "Conseil municipal du 12/03/2026 à 18 h",
            r#"{"updated":"2024-01-02T10:00:00Z","naissance":"inconnue"}"#,
            "Né(e) le 31/13/1985",
            "Date de naissance : 12/03/1850",
            "Né le 12/03/19850",
            r#"{"date_naissance":"12/03/1985","date_deces":"01/02/2020"}"#,
        ];
        let counted: u64 = ordinary
            .iter()
            .map(|o| count(o.as_bytes())[Kind::BirthDate as usize])
            .sum();
        assert_eq!(counted, 1, "only the first date of the last line is one");
        // Any chunking: the context and the date are both seen.
        let text = births.join("\n");
        let bytes = text.as_bytes();
        for size in 1..40 {
            let mut got = 0;
            let mut s = Scanner::new();
            let mut add = |f: Found| got += u64::from(f.kind == Kind::BirthDate);
            for chunk in bytes.chunks(size) {
                s.feed(chunk, &mut add);
            }
            s.finish(&mut add);
            assert_eq!(got, births.len() as u64, "chunks of {size}");
        }
    }

    #[test]
    fn a_generated_corpus_is_found_whole_and_decoys_are_not() {
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        let mut text = String::new();
        let mut want = [0u64; Kind::COUNT];
        let mut decoys = 0u64;
        for _ in 0..5_000 {
            if g.below(2) == 0 {
                let kind = Kind::ALL[g.below(Kind::COUNT as u64) as usize];
                want[kind as usize] += 1;
                let it = item(&mut g, kind);
                text.push_str(&format!("{{\"v\":\"{it}\"}},\n"));
            } else {
                decoys += 1;
                text.push_str(&format!("<p>{}</p>\n", decoy(&mut g)));
            }
        }
        assert!(decoys > 2_000);
        // Whole, and in chunks of every size from 1 to 97 bytes.
        assert_eq!(count(text.as_bytes()), want);
        for size in [1, 7, 13, 64, 97] {
            let mut got = [0u64; Kind::COUNT];
            let mut s = Scanner::new();
            let mut add = |f: Found| got[f.kind as usize] += 1;
            for chunk in text.as_bytes().chunks(size) {
                s.feed(chunk, &mut add);
            }
            s.finish(&mut add);
            assert_eq!(got, want, "chunks of {size}");
        }
    }

    #[test]
    fn a_long_run_of_letters_and_digits_keeps_the_carry_small() {
        let mut s = Scanner::new();
        let mut n = 0;
        let mut add = |_: Found| n += 1;
        s.feed(b"data:", &mut add);
        for _ in 0..10_000 {
            s.feed(b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0111222333", &mut add);
            assert!(s.carry.len() <= MAX_ITEM + 1, "{}", s.carry.len());
        }
        s.feed(b" 06 12 34 56 78 ", &mut add);
        s.finish(&mut add);
        assert_eq!(n, 1);
    }
}
