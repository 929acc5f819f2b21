//! Where a key is written: the line of `key = ...` inside the n-th
//! `[[table]]` (or the one `[table]`), so that an error points at the
//! offending key rather than at the first line that happens to mention its
//! value.

/// A place in the file: the `index`-th `[[table]]` (0 for a plain
/// `[table]`), optionally its `index`-th `[table.sub]` / `[[table.sub]]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Place<'a> {
    pub table: &'a str,
    pub index: usize,
    pub sub: Option<(&'a str, usize)>,
}

impl<'a> Place<'a> {
    pub fn new(table: &'a str, index: usize) -> Self {
        Place {
            table,
            index,
            sub: None,
        }
    }

    pub fn sub(self, sub: &'a str, index: usize) -> Self {
        Place {
            sub: Some((sub, index)),
            ..self
        }
    }

    /// The line (1-based) that sets `key` in this place; the line of the
    /// place's header when the key is not written there (a default, or an
    /// inline table); `None` when the place is not in the file.
    pub fn line(&self, text: &str, key: &str) -> Option<usize> {
        let mut seen = 0usize; // [[table]] headers so far
        let mut sub_seen = 0usize; // [[table.sub]] headers in our block so far
        let mut in_block = false;
        // Keys under the current header are ours: the block itself when no
        // sub-table is asked for, else the asked-for sub-table.
        let mut ours = false;
        let mut header = None;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim_start();
            if let Some(name) = header_name(line) {
                let sub_name = name
                    .strip_prefix(self.table)
                    .and_then(|r| r.strip_prefix('.'));
                if name == self.table {
                    seen += 1;
                    in_block = seen == self.index + 1;
                    sub_seen = 0;
                    ours = in_block && self.sub.is_none();
                } else if let (true, Some(rest)) = (in_block, sub_name) {
                    ours = match self.sub {
                        Some((sub, i)) if sub == rest => {
                            sub_seen += 1;
                            sub_seen == i + 1
                        }
                        _ => false,
                    };
                } else {
                    in_block = false;
                    ours = false;
                }
                if ours {
                    header = Some(n + 1);
                }
                continue;
            }
            if ours && sets_key(line, key) {
                return Some(n + 1);
            }
        }
        header
    }
}

/// "[a.b]" / "[[a.b]]" (comment allowed after) -> "a.b".
fn header_name(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('[')?;
    let rest = rest.strip_prefix('[').unwrap_or(rest);
    let end = rest.find(']')?;
    Some(rest[..end].trim())
}

/// "key = ..." (spaces allowed around the key).
fn sets_key(line: &str, key: &str) -> bool {
    line.strip_prefix(key)
        .is_some_and(|rest| rest.trim_start().starts_with('='))
}
