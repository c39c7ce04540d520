//! Maps config key paths (`probes.3.url`) to the line they stand on, so errors can name it.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Line numbers (1-based) of every key and sequence item of a YAML document.
#[derive(Debug, Default)]
pub struct KeyLines(HashMap<String, usize>);

/// A YAML syntax error, with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based line.
    pub line: usize,
    /// The parser's message.
    pub message: String,
}

impl KeyLines {
    /// Walks the document's events; fails on a syntax error.
    pub fn parse(text: &str) -> Result<Self, SyntaxError> {
        let mut walker = Walker::default();
        Parser::new_from_str(text)
            .load(&mut walker, false)
            .map_err(|e| SyntaxError {
                line: e.marker().line(),
                message: e.info().to_string(),
            })?;
        Ok(KeyLines(walker.lines))
    }

    /// The line of `path` (dotted, sequence items by index), or of its nearest ancestor.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(line) = self.0.get(path) {
                return Some(*line);
            }
            path = &path[..path.rfind('.')?];
        }
    }
}

enum Frame {
    Map { expecting_key: bool },
    Seq { index: usize },
}

#[derive(Default)]
struct Walker {
    lines: HashMap<String, usize>,
    frames: Vec<Frame>,
    path: Vec<String>,
}

impl Walker {
    fn record(&mut self, line: usize) {
        self.lines.entry(self.path.join(".")).or_insert(line);
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
            Some(Frame::Map { expecting_key }) => {
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
            Event::Scalar(value, ..) => {
                if let Some(Frame::Map { expecting_key }) = self.frames.last_mut()
                    && *expecting_key
                {
                    *expecting_key = false;
                    self.path.push(value);
                    self.record(line);
                    return;
                }
                self.begin_value(line);
                self.end_value();
            }
            Event::Alias(_) => {
                self.begin_value(line);
                self.end_value();
            }
            Event::MappingStart(..) => {
                self.begin_value(line);
                self.frames.push(Frame::Map { expecting_key: true });
            }
            Event::SequenceStart(..) => {
                self.begin_value(line);
                self.frames.push(Frame::Seq { index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
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
    fn syntax_error_has_a_line() {
        let err = KeyLines::parse("probes:\n  - name: a\n   kind: [\n").expect_err("invalid yaml");
        assert!(err.line >= 2, "{err:?}");
    }
}
