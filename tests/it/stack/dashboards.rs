//! Grafana's dashboards as the tests see them (Grafana itself does not run here): the files, the
//! queries of their panels and variables, and Grafana's variable substitution.

use std::fs;

use super::json::Json;
use super::{files, millis};

/// Every dashboard: (file name, parsed JSON).
pub fn dashboards() -> Vec<(String, Json)> {
    files("grafana/dashboards", "json")
        .iter()
        .map(|path| {
            let name = path.file_name().expect("file name").to_string_lossy().into_owned();
            let source = fs::read_to_string(path).expect("read dashboard");
            let json = Json::parse(&source).unwrap_or_else(|e| panic!("{name} is not valid JSON: {e}"));
            (name, json)
        })
        .collect()
}

/// Grafana's variable references in `expr`: `$name`, `${name}` and `${name:format}`.
pub fn variables_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let name: String = if let Some(braced) = rest.strip_prefix('{') {
            let end = braced.find('}').unwrap_or(braced.len());
            braced[..end].split(':').next().unwrap_or("").to_string()
        } else {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        if !name.is_empty() {
            names.push(name);
        }
    }
    names
}

/// `expr` with each Grafana variable replaced by `value(name)`.
pub fn substitute(expr: &str, value: &dyn Fn(&str) -> String) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        let (name, used) = if let Some(braced) = rest.strip_prefix('{') {
            let end = braced.find('}').map_or(braced.len(), |e| e + 1);
            (braced[..end.saturating_sub(1)].split(':').next().unwrap_or(""), end + 1)
        } else {
            let len = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .count();
            (&rest[..len], len)
        };
        out.push_str(&value(name));
        rest = &rest[used.min(rest.len())..];
    }
    out.push_str(rest);
    out
}

/// Concrete values for Grafana's built-in time variables.
pub struct Intervals {
    /// `$__interval`: the step of a graph.
    pub interval: &'static str,
    /// `$__rate_interval`: Grafana's window for `rate()`, at least 4 scrape intervals.
    pub rate_interval: &'static str,
    /// `$__range`: the dashboard's time range.
    pub range: &'static str,
}

impl Intervals {
    /// The value of the built-in variable `name` (`__interval`, `__range_s`, ...), if it is one.
    pub fn value(&self, name: &str) -> Option<String> {
        Some(match name {
            "__interval" => self.interval.to_string(),
            "__rate_interval" => self.rate_interval.to_string(),
            "__range" => self.range.to_string(),
            "__interval_s" => (millis(self.interval) / 1_000).to_string(),
            "__interval_ms" => millis(self.interval).to_string(),
            "__range_s" => (millis(self.range) / 1_000).to_string(),
            "__range_ms" => millis(self.range).to_string(),
            _ => return None,
        })
    }
}

/// One query of one panel, as Grafana would run it.
#[derive(Debug, Clone)]
pub struct PanelQuery {
    /// `#<id> <title>` of the panel.
    pub panel: String,
    pub expr: String,
    /// Grafana runs an instant query (`"instant": true`).
    pub instant: bool,
    /// Grafana runs a range query (`"range": true`, or neither flag set).
    pub range: bool,
}

/// Every query of every panel of `dashboard` (panels nested in rows included), hidden ones left
/// out as Grafana leaves them out.
pub fn panel_queries(dashboard: &Json) -> Vec<PanelQuery> {
    fn visit(panels: &[Json], out: &mut Vec<PanelQuery>) {
        for panel in panels {
            let id = match panel.get("id") {
                Some(Json::Number(id)) => *id as i64,
                _ => -1,
            };
            let title = panel.get("title").and_then(Json::as_str).unwrap_or("");
            for target in panel.get("targets").and_then(Json::as_array).into_iter().flatten() {
                let flag = |name| target.get(name) == Some(&Json::Bool(true));
                if flag("hide") {
                    continue;
                }
                if let Some(expr) = target.get("expr").and_then(Json::as_str) {
                    out.push(PanelQuery {
                        panel: format!("#{id} {title}"),
                        expr: expr.to_string(),
                        instant: flag("instant"),
                        range: flag("range") || !flag("instant"),
                    });
                }
            }
            if let Some(nested) = panel.get("panels").and_then(Json::as_array) {
                visit(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    visit(
        dashboard
            .get("panels")
            .and_then(Json::as_array)
            .map_or(&[], Vec::as_slice),
        &mut out,
    );
    out
}

/// The `label_values(selector, label)` variables of `dashboard`: (name, selector, label).
pub fn label_values_variables(dashboard: &Json) -> Vec<(String, String, String)> {
    let list = dashboard
        .get("templating")
        .and_then(|t| t.get("list"))
        .and_then(Json::as_array)
        .map_or(&[][..], Vec::as_slice);
    list.iter()
        .filter_map(|variable| {
            let name = variable.get("name").and_then(Json::as_str)?;
            let args = variable
                .get("query")
                .and_then(Json::as_str)?
                .strip_prefix("label_values(")?
                .strip_suffix(')')?;
            let (selector, label) = args.rsplit_once(',')?;
            Some((name.to_string(), selector.trim().to_string(), label.trim().to_string()))
        })
        .collect()
}
