//! Records in a JSON answer, counted as it streams: the number of elements of the array at a
//! configured path (`results`, `data.items`, or `$` for a top-level array), chunk by chunk,
//! never holding the body. A byte-level state machine (strings and escapes, nesting), so a
//! chunk boundary anywhere changes nothing; nesting deeper than `MAX_DEPTH` stops the count
//! (the answer is then reported as unreadable, never as empty).

/// Deepest nesting followed.
pub const MAX_DEPTH: usize = 64;
/// Longest object key compared with the path (longer keys never match).
const MAX_KEY: usize = 128;

#[derive(Debug, Clone)]
enum Frame {
    Object {
        /// The key of the current member is the path's next key (false before the first
        /// member, or for a key too long). Keys are compared as they end, in one buffer
        /// reused for all: no key is kept.
        key_on_path: bool,
        /// A key comes next (after `{` or `,`).
        expect_key: bool,
        /// Whether the keys down to this object follow the path (`matched` of them).
        matched: usize,
        on_path: bool,
    },
    Array {
        /// This is the array whose elements are counted.
        counting: bool,
        /// A value comes next (after `[` or `,`).
        expect_value: bool,
    },
}

/// Counts the elements of the array at one path of a JSON document.
#[derive(Debug, Clone)]
pub struct ArrayCounter {
    path: Vec<Vec<u8>>,
    stack: Vec<Frame>,
    in_string: bool,
    escape: bool,
    /// The string being read is an object key.
    in_key: bool,
    key: Vec<u8>,
    key_too_long: bool,
    count: u64,
    broken: bool,
}

impl ArrayCounter {
    /// A counter of the array at `path`: keys separated by dots (`data.items`), or `$` for
    /// a top-level array.
    pub fn new(path: &str) -> Self {
        let path = if path == "$" || path.is_empty() {
            Vec::new()
        } else {
            path.split('.').map(|k| k.as_bytes().to_vec()).collect()
        };
        Self {
            path,
            stack: Vec::new(),
            in_string: false,
            escape: false,
            in_key: false,
            key: Vec::new(),
            key_too_long: false,
            count: 0,
            broken: false,
        }
    }

    /// Elements counted so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The document nests deeper than this counter follows.
    pub fn broken(&self) -> bool {
        self.broken
    }

    /// A value starts in the current container.
    fn value_starts(&mut self) {
        if let Some(Frame::Array {
            counting,
            expect_value,
        }) = self.stack.last_mut()
        {
            if *expect_value {
                *expect_value = false;
                if *counting {
                    self.count += 1;
                }
            }
        }
    }

    /// Whether a container opened now is on the path, and how much of it matches.
    fn position(&self) -> (bool, usize) {
        match self.stack.last() {
            None => (true, 0),
            Some(Frame::Object {
                key_on_path: true,
                on_path: true,
                matched,
                ..
            }) => (true, matched + 1),
            _ => (false, 0),
        }
    }

    /// Reads the next bytes of the document.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.broken {
            return;
        }
        let mut i = 0;
        while i < chunk.len() {
            if self.in_string && !self.escape {
                // Straight to the string's end (or an escape); a key's bytes are kept.
                let rest = &chunk[i..];
                let p = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
                if self.in_key {
                    self.push_key_bytes(&rest[..p]);
                }
                i += p;
                if i == chunk.len() {
                    return;
                }
            }
            let b = chunk[i];
            i += 1;
            if self.in_string {
                if self.escape {
                    self.escape = false;
                    if self.in_key {
                        self.push_key(b);
                    }
                } else if b == b'\\' {
                    self.escape = true;
                } else if b == b'"' {
                    self.in_string = false;
                    if self.in_key {
                        self.in_key = false;
                        if let Some(Frame::Object {
                            key_on_path,
                            matched,
                            ..
                        }) = self.stack.last_mut()
                        {
                            *key_on_path = !self.key_too_long
                                && self.path.get(*matched).is_some_and(|p| *p == self.key);
                        }
                    }
                } else if self.in_key {
                    self.push_key(b);
                }
                continue;
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    let expecting_key = matches!(
                        self.stack.last(),
                        Some(Frame::Object {
                            expect_key: true,
                            ..
                        })
                    );
                    if expecting_key {
                        self.in_key = true;
                        self.key.clear();
                        self.key_too_long = false;
                        if let Some(Frame::Object { expect_key, .. }) = self.stack.last_mut() {
                            *expect_key = false;
                        }
                    } else {
                        self.value_starts();
                    }
                }
                b'{' | b'[' => {
                    self.value_starts();
                    if self.stack.len() >= MAX_DEPTH {
                        self.broken = true;
                        return;
                    }
                    let (on_path, matched) = self.position();
                    self.stack.push(if b == b'{' {
                        Frame::Object {
                            key_on_path: false,
                            expect_key: true,
                            matched,
                            on_path,
                        }
                    } else {
                        Frame::Array {
                            counting: on_path && matched == self.path.len(),
                            expect_value: true,
                        }
                    });
                }
                b'}' | b']' => {
                    self.stack.pop();
                }
                b',' => match self.stack.last_mut() {
                    Some(Frame::Object { expect_key, .. }) => *expect_key = true,
                    Some(Frame::Array { expect_value, .. }) => *expect_value = true,
                    None => {}
                },
                b' ' | b'\t' | b'\n' | b'\r' | b':' => {}
                _ => self.value_starts(),
            }
        }
    }

    fn push_key_bytes(&mut self, bytes: &[u8]) {
        let room = MAX_KEY - self.key.len().min(MAX_KEY);
        if bytes.len() > room {
            self.key_too_long = true;
        }
        self.key.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn push_key(&mut self, b: u8) {
        if self.key.len() < MAX_KEY {
            self.key.push(b);
        } else {
            self.key_too_long = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"total": 3, "note": "a [tricky], \"quoted\" {string}", "results": [
        {"nir": "1", "pieces": [1, 2, 3], "results": [9, 9]},
        {"b": "x,]"},
        3
    ], "after": [1, 2]}"#;

    fn count(path: &str, doc: &str) -> u64 {
        let mut c = ArrayCounter::new(path);
        c.feed(doc.as_bytes());
        c.count()
    }

    #[test]
    fn the_elements_of_the_array_at_the_path_are_counted() {
        assert_eq!(count("results", DOC), 3);
        assert_eq!(count("after", DOC), 2);
        assert_eq!(count("total", DOC), 0);
        assert_eq!(count("missing", DOC), 0);
        assert_eq!(count("$", "[1, {\"a\": [1]}, \"x\", [2, 3]]"), 4);
        assert_eq!(count("$", "[]"), 0);
        assert_eq!(
            count(
                "data.items",
                r#"{"data": {"items": [{}, {}], "n": [1]}, "items": [1]}"#
            ),
            2
        );
        assert_eq!(
            count(
                "data.items",
                r#"{"items": [1, 2], "data": {"x": {"items": [1]}}}"#
            ),
            0
        );
    }

    #[test]
    fn nesting_too_deep_is_reported() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let mut c = ArrayCounter::new("$");
        c.feed(deep.as_bytes());
        assert!(c.broken());
    }

    proptest::proptest! {
        /// Wherever the chunk boundaries fall, the count is the same.
        #[test]
        fn chunk_boundaries_change_nothing(cuts in proptest::collection::vec(0usize..400, 0..10)) {
            let bytes = DOC.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut c = ArrayCounter::new("results");
            let mut at = 0;
            for cut in cuts {
                c.feed(&bytes[at..cut.max(at)]);
                at = cut.max(at);
            }
            c.feed(&bytes[at..]);
            proptest::prop_assert_eq!(c.count(), 3);
        }

        /// Any bytes: never a panic, bounded state.
        #[test]
        fn arbitrary_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..500)) {
            let mut c = ArrayCounter::new("a.b");
            c.feed(&bytes);
            proptest::prop_assert!(c.stack.len() <= MAX_DEPTH && c.key.len() <= MAX_KEY);
        }
    }
}
