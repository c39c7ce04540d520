//! Maps config key paths (`probes.3.url`) to the line they stand on, so errors can name it;
//! on the way it finds what a YAML loader accepts silently: a key given twice in one mapping,
//! and aliases that expand a small file into a huge document.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Line numbers (1-based) of every key and sequence item of a YAML document.
#[derive(Debug, Default)]
pub struct KeyLines {
    lines: HashMap<String, usize>,
    /// Keys given twice in the same mapping (the later ones).
    pub duplicates: Vec<Duplicate>,
}

/// A key given again in a mapping that has it already (a YAML loader keeps the last silently).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// Dotted path of the key.
    pub path: String,
    /// 1-based line of the repeated key.
    pub line: usize,
    /// 1-based line where the key first appears.
    pub first: usize,
}

/// Most nodes that aliases may add to a document by expansion: far more than any real config
/// shares through anchors, far less than an "alias bomb" (a few lines that expand to billions).
pub const MAX_ALIAS_NODES: u64 = 4_000_000;

/// A YAML syntax error, with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based line.
    pub line: usize,
    /// The parser's message.
    pub message: String,
}

impl KeyLines {
    /// Walks the document's events; fails on a syntax error, or when aliases would expand the
    /// document by more than [`MAX_ALIAS_NODES`] nodes.
    pub fn parse(text: &str) -> Result<Self, SyntaxError> {
        let mut walker = Walker::default();
        Parser::new_from_str(text)
            .load(&mut walker, false)
            .map_err(|e| SyntaxError {
                line: e.marker().line(),
                message: format!("invalid YAML: {}", e.info()),
            })?;
        if let Some(line) = walker.bomb_at {
            return Err(SyntaxError {
                line,
                message: format!(
                    "aliases expand the document to more than {MAX_ALIAS_NODES} nodes (an alias bomb?); write the \
                     values out or share fewer of them"
                ),
            });
        }
        Ok(KeyLines {
            lines: walker.lines,
            duplicates: walker.duplicates,
        })
    }

    /// The line of `path` (dotted, sequence items by index), or of its nearest ancestor.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(line) = self.lines.get(path) {
                return Some(*line);
            }
            path = &path[..path.rfind('.')?];
        }
    }
}

enum Frame {
    Map {
        expecting_key: bool,
        /// Keys seen so far, with their lines.
        keys: HashMap<String, usize>,
    },
    Seq {
        index: usize,
    },
}

#[derive(Default)]
struct Walker {
    lines: HashMap<String, usize>,
    frames: Vec<Frame>,
    path: Vec<String>,
    duplicates: Vec<Duplicate>,
    /// Expanded size (nodes) of every open collection, innermost last, with its anchor.
    sizes: Vec<(usize, u64)>,
    /// Expanded size of every anchored node that is complete.
    anchors: HashMap<usize, u64>,
    /// Nodes added by aliases so far.
    alias_nodes: u64,
    /// The line where the aliases' expansion first went over the limit.
    bomb_at: Option<usize>,
}

impl Walker {
    fn record(&mut self, line: usize) {
        self.lines.entry(self.path.join(".")).or_insert(line);
    }

    /// A node of `size` (expanded) nodes is complete: it counts in its parent, and under its
    /// anchor when it has one.
    fn add_node(&mut self, size: u64, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, size);
        }
        if let Some((_, parent)) = self.sizes.last_mut() {
            *parent = parent.saturating_add(size);
        }
    }

    /// A value starts: inside a sequence it is the next item, with a path of its own.
    fn begin_value(&mut self, line: usize) {
        if let Some(Frame::Seq { index }) = self.frames.last() {
            self.path.push(index.to_string());
            self.record(line);
        }
    }

    /// A value ended: step to the next key or item.
    fn end_value(&mut self) {
        match self.frames.last_mut() {
            Some(Frame::Map { expecting_key, .. }) => {
                *expecting_key = true;
                self.path.pop();
            }
            Some(Frame::Seq { index }) => {
                *index += 1;
                self.path.pop();
            }
            None => {}
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let line = mark.line();
        match event {
            Event::Scalar(value, _, anchor, _) => {
                self.add_node(1, anchor);
                if let Some(Frame::Map { expecting_key, keys }) = self.frames.last_mut()
                    && *expecting_key
                {
                    *expecting_key = false;
                    // `<<` (merge) may be given more than once by some writers; serde ignores it.
                    if value != "<<"
                        && let Some(&first) = keys.get(&value)
                    {
                        let mut path = self.path.clone();
                        path.push(value.clone());
                        self.duplicates.push(Duplicate {
                            path: path.join("."),
                            line,
                            first,
                        });
                    } else {
                        keys.insert(value.clone(), line);
                    }
                    self.path.push(value);
                    self.record(line);
                    return;
                }
                self.begin_value(line);
                self.end_value();
            }
            Event::Alias(anchor) => {
                let size = self.anchors.get(&anchor).copied().unwrap_or(1);
                self.alias_nodes = self.alias_nodes.saturating_add(size);
                if self.alias_nodes > MAX_ALIAS_NODES && self.bomb_at.is_none() {
                    self.bomb_at = Some(line);
                }
                self.add_node(size, 0);
                if let Some(Frame::Map { expecting_key, .. }) = self.frames.last_mut()
                    && *expecting_key
                {
                    // An alias as a key: its value follows.
                    *expecting_key = false;
                    self.path.push(String::new());
                    return;
                }
                self.begin_value(line);
                self.end_value();
            }
            Event::MappingStart(anchor, _) => {
                self.begin_value(line);
                self.sizes.push((anchor, 1));
                self.frames.push(Frame::Map {
                    expecting_key: true,
                    keys: HashMap::new(),
                });
            }
            Event::SequenceStart(anchor, _) => {
                self.begin_value(line);
                self.sizes.push((anchor, 1));
                self.frames.push(Frame::Seq { index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                if let Some((anchor, size)) = self.sizes.pop() {
                    self.add_node(size, anchor);
                }
                self.frames.pop();
                self.end_value();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_and_items() {
        let text = "defaults:\n  interval: 30s\nprobes:\n  - name: a\n    kind: http\n  - name: b\n    url: x\n    headers: {A: b}\n";
        let lines = KeyLines::parse(text).expect("valid yaml");
        assert_eq!(lines.line_of("defaults.interval"), Some(2));
        assert_eq!(lines.line_of("probes.0"), Some(4));
        assert_eq!(lines.line_of("probes.0.kind"), Some(5));
        assert_eq!(lines.line_of("probes.1.url"), Some(7));
        assert_eq!(lines.line_of("probes.1.headers.A"), Some(8));
        // A missing key falls back to its parent.
        assert_eq!(lines.line_of("probes.1.method"), Some(6));
        assert_eq!(lines.line_of("nothing"), None);
    }

    #[test]
    fn finds_keys_given_twice() {
        let text = "a: 1\nb:\n  c: 1\n  c: 2\na: 3\nlist:\n  - {x: 1}\n  - {x: 2}\n";
        let lines = KeyLines::parse(text).expect("valid yaml");
        assert_eq!(
            lines.duplicates,
            vec![
                Duplicate {
                    path: "b.c".into(),
                    line: 4,
                    first: 3
                },
                Duplicate {
                    path: "a".into(),
                    line: 5,
                    first: 1
                },
            ]
        );
    }

    #[test]
    fn an_alias_bomb_is_refused_at_its_line() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = i - 1;
            text.push_str(&format!("a{i}: &a{i} [{}]\n", vec![format!("*a{p}"); 10].join(", ")));
        }
        let err = KeyLines::parse(&text).expect_err("a bomb");
        assert_eq!(err.line, 7, "{err:?}");
        // Anchors shared sensibly are fine.
        let shared = "d: &d {interval: 1m, timeout: 5s}\np:\n  - {<<: *d, name: a}\n  - {<<: *d, name: b}\n";
        assert!(KeyLines::parse(shared).is_ok());
    }

    #[test]
    fn syntax_error_has_a_line() {
        let err = KeyLines::parse("probes:\n  - name: a\n   kind: [\n").expect_err("invalid yaml");
        assert!(err.line >= 2, "{err:?}");
    }
}
