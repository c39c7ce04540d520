//! The status page's settings: the `status_page:` section and a probe's own `status_page:` key.

use std::time::Duration;

use serde::Deserialize;

use crate::spec::{BuildContext, KeyPath, Section, valid_label_name};

/// A probe's own `status_page:` settings.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ProbePage {
    /// Leave the probe off the status page, `/api/v1/status`, the events and the badges (it is
    /// still probed and still on `/metrics`).
    pub hide: bool,
}

/// `status_page:`: the page at `/` and `/api/v1/status`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StatusPage {
    /// The page's title.
    pub title: String,
    /// A banner shown above the probes (maintenance notice and the like).
    pub message: Option<String>,
    /// Group the probes by the value of this label (probes without it form their own group).
    pub group_by: Option<String>,
    /// Log one summary line per probe this often (level, uptime 24 h, latency); off when unset.
    #[serde(with = "crate::spec::values::duration")]
    pub log_summary_every: Option<Duration>,
}

impl Default for StatusPage {
    fn default() -> Self {
        Self {
            title: "vigil".to_string(),
            message: None,
            group_by: None,
            log_summary_every: None,
        }
    }
}

impl Section for StatusPage {
    const KEY: &'static str = "status_page";
    type Spec = StatusPage;

    fn build(page: StatusPage, cx: &mut BuildContext, at: &KeyPath) -> Option<Self> {
        let before = cx.error_count();
        if page.title.trim().is_empty() {
            cx.error(at.key("title"), "must not be empty");
        }
        if let Some(label) = &page.group_by
            && !valid_label_name(label)
        {
            cx.error(
                at.key("group_by"),
                format!("`{label}` is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
            );
        }
        if let Some(every) = page.log_summary_every
            && every < Duration::from_secs(1)
        {
            cx.error(at.key("log_summary_every"), "must be at least 1s");
        }
        (cx.error_count() == before).then_some(page)
    }
}
