//! Plain-text tables for the terminal (`vigil once`, `vigil status`): left-aligned columns two
//! spaces apart, no trailing blanks.

use std::fmt::Write;

/// `header` and `rows` as aligned lines, one per row, each ending in a newline.
pub fn render<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = cells.zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_lines_end_clean() {
        let rows = [
            ["api".to_string(), "UP".to_string(), String::new()],
            ["database".to_string(), "DOWN".to_string(), "connect".to_string()],
        ];
        assert_eq!(
            render(["PROBE", "LEVEL", "REASON"], &rows),
            "PROBE     LEVEL  REASON\napi       UP\ndatabase  DOWN   connect\n"
        );
    }
}
