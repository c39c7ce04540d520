//! Hostile configs.
