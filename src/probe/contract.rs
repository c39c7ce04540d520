//! The kind contract, proven by a kind that exists in tests only: this one file and its one line
//! in `kinds!` give it a config key, counters for its reasons, series on `/metrics` and on
//! `/probe`, and a value carried across restarts, with no central code knowing it.

use serde::Deserialize;

use super::{Built, CheckContext, Family, ProbeKind, Publish, Reason, Role, Unit, Verdict};
use crate::spec::BuildContext;

/// `kind: echo`: UP when the target is not empty; it observes the target's length.
#[derive(Debug)]
pub struct Echo {
    shout: bool,
}

/// Its config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// A target for a scheduled probe.
    target: Option<String>,
    /// Doubles what it observes.
    #[serde(default)]
    shout: bool,
}

/// What it observes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Obs {
    length: usize,
}

/// What it carries: the longest target seen.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Kept {
    longest: usize,
}

impl ProbeKind for Echo {
    const NAME: &'static str = "echo";
    const REASONS: &'static [Reason] = &[Reason::Empty];
    const FAMILIES: &'static [Family<Self>] = &[
        Family {
            name: "vigil_probe_echo_length",
            help: "Length of the target echoed.",
            unit: Some(Unit::Bytes),
            publish: Publish::Metrics,
            emit: |seen, out| {
                if seen.ran {
                    out.gauge(&[], seen.obs.length as f64);
                }
            },
        },
        Family {
            name: "vigil_probe_echo_longest",
            help: "Longest target echoed.",
            unit: None,
            publish: Publish::Metrics,
            emit: |seen, out| out.gauge(&[], seen.kept.longest as f64),
        },
        Family {
            name: "probe_echo_length",
            help: "Length of the target echoed",
            unit: Some(Unit::Bytes),
            publish: Publish::Probe,
            emit: |seen, out| out.gauge(&[("case", "as_is")], seen.obs.length as f64),
        },
    ];

    type Spec = Spec;
    type Obs = Obs;
    type Kept = Kept;

    fn build(spec: Spec, cx: &mut BuildContext, path: &str, role: Role) -> Option<Built<Self>> {
        if role == Role::Scheduled && spec.target.is_none() {
            cx.error(path, "missing key `target`");
        }
        Some(Built {
            settings: Echo { shout: spec.shout },
            target: spec.target,
            freshness: None,
        })
    }

    async fn check(&self, target: &str, _cx: &CheckContext, obs: &mut Obs) -> Verdict {
        obs.length = target.len() * if self.shout { 2 } else { 1 };
        if target.is_empty() {
            Verdict::down(Reason::Empty, "nothing to echo")
        } else {
            Verdict::up()
        }
    }

    fn keep(kept: &mut Kept, obs: &Obs) {
        kept.longest = kept.longest.max(obs.length);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::config::Config;
    use crate::metrics;
    use crate::state::{State, lock};

    const CONFIG: &str =
        "probes:\n  - {name: hello, kind: echo, target: hello-world}\nmodules:\n  loud: {kind: echo, shout: true}\n";

    #[tokio::test]
    async fn one_file_and_one_line_give_metrics_and_probe_output() {
        let config = Config::parse(CONFIG, std::path::Path::new(".")).expect("an echo probe and module");
        let context = crate::probe::CheckContext::default();

        // /metrics: the kind's own series, with the probe's labels, and (with metrics.detail)
        // its reasons from 0.
        let def = &config.probes[0];
        let dir = tempfile::tempdir().expect("tempdir");
        let state = Arc::new(State::open(dir.path()).expect("state"));
        let handle = state.upsert(def);
        let outcome = crate::scheduler::execute(&def.probe, &def.target, &def.timing, None, &context).await;
        lock(&handle).record(outcome);
        let registry = metrics::registry(state.clone(), &metrics::ReloadMetrics::default(), None);
        let text = metrics::encode(&registry, false).expect("encode");
        assert!(
            text.contains("vigil_probe_failures_total{probe=\"hello\",kind=\"echo\"} 0"),
            "{text}"
        );
        assert!(!text.contains("reason=\"empty\""), "{text}");
        state.set_detail(true);
        let text = metrics::encode(&registry, false).expect("encode");
        assert!(
            text.contains("vigil_probe_echo_length_bytes{probe=\"hello\",kind=\"echo\"} 11"),
            "{text}"
        );
        assert!(
            text.contains("vigil_probe_echo_longest{probe=\"hello\",kind=\"echo\"} 11"),
            "{text}"
        );
        assert!(
            text.contains("vigil_probe_failures_by_reason_total{probe=\"hello\",kind=\"echo\",reason=\"empty\"} 0"),
            "{text}"
        );
        assert!(
            !text.contains("probe_echo_length{"),
            "a /probe family stays off /metrics"
        );

        // What it carries survives a restart, in the state file.
        state.save().await.expect("save");
        let reopened = Arc::new(State::open(dir.path()).expect("reopen"));
        let again = reopened.upsert(def);
        assert_eq!(
            lock(&again).carried.of::<super::Echo>(),
            Some(&super::Kept { longest: 11 })
        );

        // /probe: the module's series in blackbox_exporter's form.
        let module = &config.modules["loud"];
        let outcome = crate::scheduler::execute(&module.probe, "abc", &module.timing, None, &context).await;
        let body = crate::web::blackbox::render(&outcome);
        assert!(body.contains("# TYPE probe_echo_length_bytes gauge\n"), "{body}");
        assert!(body.contains("probe_echo_length_bytes{case=\"as_is\"} 6\n"), "{body}");
        assert!(body.contains("probe_success 1\n"), "{body}");
        assert!(
            !body.contains("vigil_probe_echo_longest"),
            "a /metrics family stays off /probe"
        );
    }

    #[test]
    fn families_of_one_name_agree_on_help_and_unit() {
        use crate::probe::{Kind, Publish, family_groups};
        for publish in [Publish::Metrics, Publish::Detail, Publish::Probe] {
            for group in family_groups(publish) {
                for (kind, index) in &group.members {
                    let info = kind.families().into_iter().nth(*index).expect("declared");
                    assert_eq!(
                        (info.help, info.unit),
                        (group.help, group.unit),
                        "{} of {kind} differs from another kind's",
                        group.name
                    );
                }
            }
        }
        assert!(
            Kind::ALL.iter().all(|k| !k.families().is_empty()),
            "every kind publishes something"
        );
        // `metrics.detail` adds its families to the others on `/metrics`: no name twice.
        for detail in family_groups(Publish::Detail) {
            assert!(
                family_groups(Publish::Metrics).iter().all(|g| g.name != detail.name),
                "{} is both a default and a detail family",
                detail.name
            );
        }
    }
}
