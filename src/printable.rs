//! Text from outside (a job's heartbeat message, a server's error, a status read from another
//! vigil) made safe to print on a terminal or in a log line: escape sequences are removed whole,
//! line breaks and tabs become spaces, other control characters are dropped.

use std::borrow::Cow;

/// `text` without terminal escape sequences or control characters (borrowed when it has none).
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates up to a final byte (`ESC [ 31 m`).
                Some('[') => skip_csi(&mut chars),
                // OSC, DCS, SOS, PM, APC: a string up to BEL or ST (`ESC ]0;title BEL`).
                Some(']' | 'P' | 'X' | '^' | '_') => skip_string(&mut chars),
                // Any other escape is two characters long.
                _ => {}
            },
            '\u{9b}' => skip_csi(&mut chars),
            '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars),
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn skip_csi(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    for c in chars.by_ref() {
        if ('\u{40}'..='\u{7e}').contains(&c) {
            return;
        }
    }
}

fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(c) = chars.next() {
        match c {
            '\u{7}' | '\u{9c}' => return,
            '\u{1b}' if chars.peek() == Some(&'\\') => {
                chars.next();
                return;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn escapes_and_controls_are_removed() {
        let cases = [
            ("plain text", "plain text"),
            ("\u{1b}[31mred\u{1b}[0m", "red"),
            ("\u{1b}]0;pwned\u{7}title", "title"),
            ("\u{1b}]8;;http://evil\u{1b}\\link\u{1b}]8;;\u{1b}\\", "link"),
            ("a\u{1b}cb", "ab"),
            ("line\nforged INFO log\r\tend", "line forged INFO log  end"),
            ("bell\u{7} back\u{8}space \u{9b}2Jc1 \u{7f}del", "bell backspace c1 del"),
            ("unterminated \u{1b}[31", "unterminated "),
            ("ünïcödé ✓", "ünïcödé ✓"),
        ];
        for (text, want) in cases {
            assert_eq!(printable(text), want, "{text:?}");
        }
    }
}
