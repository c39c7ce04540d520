//! `vigil once`: every probe once, concurrently, as a table.

use std::fmt::Write as _;

use crate::config::{Config, ProbeDef};
use crate::probe::{Level, Reason};
use crate::scheduler;
use crate::state::Outcome;

/// Runs every probe of `config` once (retries included), concurrently; results in config order.
pub async fn run(config: &Config) -> crate::Result<Vec<(&ProbeDef, Outcome)>> {
    let mut context = crate::app::context_for(config)?;
    // No listener here: the probes may have all but the reserve.
    context.sockets =
        crate::transport::connect::Sockets::limited(crate::descriptors::Budget::of_process(Some(1)).probes);
    let limiter = std::sync::Arc::new(tokio::sync::Semaphore::new(config.concurrency));
    let tasks: Vec<_> = config
        .probes
        .iter()
        .map(|def| {
            let (def, limiter, context) = (def.clone(), limiter.clone(), context.clone());
            tokio::spawn(async move {
                scheduler::execute(&def.probe, &def.target, &def.timing, Some(&limiter), &context).await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for (def, task) in config.probes.iter().zip(tasks) {
        // `execute` catches a probe's panic itself; a task that fails all the same is a DOWN
        // row, never a missing one (which would let "all UP" pass).
        let outcome = task.await.unwrap_or_else(|e| Outcome {
            level: Level::Down,
            reason: Some(Reason::Internal),
            detail: format!("the probe's task failed: {e}"),
            duration: std::time::Duration::ZERO,
            observations: def.probe.observed(),
            at: std::time::SystemTime::now(),
            retries: 0,
            pending: false,
        });
        results.push((&**def, outcome));
    }
    Ok(results)
}

/// Whether every run ended UP.
pub fn all_up(results: &[(&ProbeDef, Outcome)]) -> bool {
    results.iter().all(|(_, o)| o.level == Level::Up)
}

/// The table: probe, kind, level, latency, reason and detail.
pub fn table(results: &[(&ProbeDef, Outcome)]) -> String {
    let rows: Vec<[String; 5]> = results
        .iter()
        .map(|(def, o)| {
            let why = match o.reason {
                Some(reason) if o.detail.is_empty() => reason.to_string(),
                Some(reason) => format!("{reason}: {}", o.detail),
                None => String::new(),
            };
            [
                def.name.clone(),
                def.kind().to_string(),
                o.level.to_string(),
                format!("{:.1}ms", o.duration.as_secs_f64() * 1e3),
                why,
            ]
        })
        .collect();
    let header = ["PROBE", "KIND", "LEVEL", "LATENCY", "REASON"];
    let mut out = crate::table::render(header, &rows);
    let up = results.iter().filter(|(_, o)| o.level == Level::Up).count();
    let degraded = results.iter().filter(|(_, o)| o.level == Level::Degraded).count();
    let _ = writeln!(
        out,
        "\n{up} up, {degraded} degraded, {} down",
        results.len() - up - degraded
    );
    out
}
