//! Listener abuse.
