//! Status badges for READMEs: flat SVGs in the usual two-part style, text escaped.

/// Colours of the value part.
pub const GREEN: &str = "#2e7d32";
/// DEGRADED and middling uptime.
pub const AMBER: &str = "#a15c00";
/// DOWN and poor uptime.
pub const RED: &str = "#c62828";
/// Unknown or no data.
pub const GREY: &str = "#6b6b6b";

/// Escapes text for XML (element content and attribute values).
pub fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Rough width of `text` in Verdana 11px.
fn text_width(text: &str) -> u32 {
    text.chars()
        .map(|c| match c {
            'i' | 'l' | 'j' | '.' | ',' | ':' | '|' | '!' | '\'' => 4,
            'm' | 'w' | 'M' | 'W' | '%' => 10,
            c if c.is_ascii_uppercase() => 8,
            _ => 7,
        })
        .sum()
}

/// A badge reading `label | value`, the value on `colour`.
pub fn render(label: &str, value: &str, colour: &str) -> String {
    let (lw, vw) = (text_width(label) + 12, text_width(value) + 12);
    let width = lw + vw;
    let (label_x, value_x) = (f64::from(lw) / 2.0, f64::from(lw) + f64::from(vw) / 2.0);
    let (label, value, colour) = (escape_xml(label), escape_xml(value), escape_xml(colour));
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" aria-label="{label}: {value}"><title>{label}: {value}</title><linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient><clipPath id="r"><rect width="{width}" height="20" rx="3" fill="#fff"/></clipPath><g clip-path="url(#r)"><rect width="{lw}" height="20" fill="#555"/><rect x="{lw}" width="{vw}" height="20" fill="{colour}"/><rect width="{width}" height="20" fill="url(#s)"/></g><g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11"><text x="{label_x}" y="15" fill="#010101" fill-opacity=".3">{label}</text><text x="{label_x}" y="14">{label}</text><text x="{value_x}" y="15" fill="#010101" fill-opacity=".3">{value}</text><text x="{value_x}" y="14">{value}</text></g></svg>"##
    )
}

/// The colour of a level (`up`, `degraded`, `down`, anything else grey).
pub fn level_colour(level: &str) -> &'static str {
    match level {
        "up" => GREEN,
        "degraded" => AMBER,
        "down" => RED,
        _ => GREY,
    }
}

/// The colour of an uptime ratio: green from 99.9 %, amber from 99 %, red below.
pub fn uptime_colour(ratio: Option<f64>) -> &'static str {
    match ratio {
        None => GREY,
        Some(r) if r >= 0.999 => GREEN,
        Some(r) if r >= 0.99 => AMBER,
        Some(_) => RED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        let svg = render("<script>x</script>", "a&b\"'", GREEN);
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(svg.contains("a&amp;b&quot;&apos;"));
    }

    #[test]
    fn colours() {
        assert_eq!(uptime_colour(Some(1.0)), GREEN);
        assert_eq!(uptime_colour(Some(0.995)), AMBER);
        assert_eq!(uptime_colour(Some(0.5)), RED);
        assert_eq!(uptime_colour(None), GREY);
        assert_eq!(level_colour("down"), RED);
    }
}
