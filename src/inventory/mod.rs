//! Inventories: what runs (Kubernetes workloads), watched live and encoded at scrape time.

pub mod kubernetes;
