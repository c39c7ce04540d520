//! `/runbook`: docs/runbook.md, embedded at build time and rendered as HTML, so every alert's
//! `runbook_url` (built from `vigil_web_info`) reaches the runbook of the vigil that raised it.
//! The renderer knows the Markdown that file uses: headings (with GitHub's anchors), paragraphs,
//! lists, code blocks, inline code and bold.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The runbook's Markdown.
pub const MARKDOWN: &str = include_str!("../../docs/runbook.md");

/// Serves the rendered runbook.
pub async fn handler() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        render(MARKDOWN),
    )
        .into_response()
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes.
pub fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// Inline markup: `code` and **bold**; everything else escaped.
fn inline(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 {
            out.push_str("<code>");
            out.push_str(&escape(part));
            out.push_str("</code>");
            continue;
        }
        for (j, piece) in part.split("**").enumerate() {
            if j % 2 == 1 {
                out.push_str("<strong>");
                out.push_str(&escape(piece));
                out.push_str("</strong>");
            } else {
                out.push_str(&escape(piece));
            }
        }
    }
    out
}

#[derive(PartialEq)]
enum Block {
    None,
    Paragraph,
    List(&'static str),
    Code,
}

/// Renders `markdown` as a whole HTML page.
pub fn render(markdown: &str) -> String {
    let mut body = String::new();
    let mut block = Block::None;
    let close = |block: &mut Block, body: &mut String| {
        match block {
            Block::Paragraph => body.push_str("</p>\n"),
            Block::List(tag) => {
                body.push_str("</li></");
                body.push_str(tag);
                body.push_str(">\n");
            }
            Block::Code | Block::None => {}
        }
        *block = Block::None;
    };
    for line in markdown.lines() {
        if block == Block::Code {
            if line.trim_start().starts_with("```") {
                body.push_str("</code></pre>\n");
                block = Block::None;
            } else {
                body.push_str(&escape(line));
                body.push('\n');
            }
            continue;
        }
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            close(&mut block, &mut body);
            body.push_str("<pre><code>");
            block = Block::Code;
        } else if trimmed.is_empty() {
            close(&mut block, &mut body);
        } else if let Some((level, text)) = heading(trimmed) {
            close(&mut block, &mut body);
            body.push_str(&format!(
                "<h{level} id=\"{}\">{}</h{level}>\n",
                escape(&anchor(text)),
                inline(text)
            ));
        } else if let Some((tag, text)) = list_item(trimmed) {
            match block {
                Block::List(open) if open == tag => body.push_str("</li>\n<li>"),
                _ => {
                    close(&mut block, &mut body);
                    body.push_str(&format!("<{tag}>\n<li>"));
                    block = Block::List(tag);
                }
            }
            body.push_str(&inline(text));
        } else {
            match block {
                Block::Paragraph | Block::List(_) => body.push('\n'),
                _ => {
                    body.push_str("<p>");
                    block = Block::Paragraph;
                }
            }
            body.push_str(&inline(trimmed));
        }
    }
    close(&mut block, &mut body);
    if block == Block::Code {
        body.push_str("</code></pre>\n");
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>vigil runbook</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <style>body{{font-family:sans-serif;max-width:50em;margin:2em auto;padding:0 1em;line-height:1.5}}\
         pre{{background:#f4f4f4;padding:.5em;overflow-x:auto}}code{{font-size:.95em}}</style></head>\n\
         <body>\n{body}</body></html>\n"
    )
}

fn heading(line: &str) -> Option<(usize, &str)> {
    let level = line.bytes().take_while(|&b| b == b'#').count();
    if (1..=6).contains(&level) && line.as_bytes().get(level) == Some(&b' ') {
        Some((level, line[level + 1..].trim()))
    } else {
        None
    }
}

fn list_item(line: &str) -> Option<(&'static str, &str)> {
    if let Some(rest) = line.strip_prefix("- ") {
        return Some(("ul", rest));
    }
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 && line[digits..].starts_with(". ") {
        return Some(("ol", &line[digits + 2..]));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_headings_with_anchors_lists_and_code() {
        let html = render(
            "# vigil runbook\n\n## VigilProbeDown\n\n**Meaning.** A probe <is> `down`.\nMore.\n\n1. one\n2. two\n\n```\namtool <x>\n```\n",
        );
        assert!(html.contains("<h2 id=\"vigilprobedown\">VigilProbeDown</h2>"), "{html}");
        assert!(
            html.contains("<p><strong>Meaning.</strong> A probe &lt;is&gt; <code>down</code>.\nMore.</p>"),
            "{html}"
        );
        assert!(html.contains("<ol>\n<li>one</li>\n<li>two</li></ol>"), "{html}");
        assert!(html.contains("<pre><code>amtool &lt;x&gt;\n</code></pre>"), "{html}");
    }

    #[test]
    fn the_embedded_runbook_has_a_section_for_every_alert() {
        let rules = include_str!("../../rules/vigil-alerts.yml");
        let html = render(MARKDOWN);
        for name in rules.lines().filter_map(|l| l.trim().strip_prefix("- alert:")) {
            let id = format!("id=\"{}\"", anchor(name));
            assert!(html.contains(&id), "no runbook section for {name}");
            let link = format!("runbook#{}", anchor(name));
            assert!(rules.contains(&link), "{name}'s runbook_url does not end in {link}");
        }
    }
}
