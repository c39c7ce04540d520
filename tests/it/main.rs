//! vigil's integration tests, one binary (one link, one place to look), a module per area.
//!
//! Run one area with `cargo test --test it <module>::` (`cargo test --test it conformance::`).
//! Tests that start the heavy real components (Prometheus and Alertmanager, blackbox_exporter,
//! a Docker engine, the container image, thousands of connections, timing-sensitive probes)
//! take [`common::exclusive`] first, so they never run beside each other and measure cleanly;
//! the rest run in parallel as before.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod stack;

mod alerting;
mod alerting_e2e;
mod browser;
mod cli;
mod config_files;
mod conformance;
mod conformance_options;
mod container_image;
mod dns_probe;
mod docker_inventory;
mod freshness_elasticsearch;
mod freshness_sql;
mod grpc_probe;
mod heartbeat;
mod hostile;
mod http2_probe;
mod http_probe;
mod icmp_probe;
mod kubernetes;
mod kubernetes_manifests;
mod receiver;
mod receiver_e2e;
mod receiver_kubernetes;
mod scheduler;
mod starttls;
mod status;
mod tcp_probe;
mod web;
mod websocket_probe;
