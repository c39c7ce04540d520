//! Inventories: watchers that keep a snapshot of what runs (containers, workloads); a collector
//! encodes the snapshot at scrape time, so what vanishes vanishes from `/metrics`.

pub mod docker;
pub mod kubernetes;
