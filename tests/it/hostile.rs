//! The hostile campaign: what an attacker or an unlucky operator would try, kept in the suite so
//! that it stays fixed. Every case runs on 127.0.0.1 only, with bounded loops and deadlines, and
//! stops every process it starts.
//!
//! - `configs`: malformed, huge and tricky configs against `vigil check`, `run` and reloads;
//! - `targets`: targets that hang, trickle, lie, redirect credentials away, or send escapes;
//! - `listener`: idle and trickling connections by the thousand under a 1,024 descriptor limit;
//! - `disk`: the history store on a full disk (a real tmpfs, mounted by the test as root) and
//!   under kill -9.
//!
//! Each module prints how many cases it ran and what it measured (`cargo test --test it hostile:: --
//! --nocapture` shows the figures).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

mod configs;
mod disk;
mod listener;
mod targets;
