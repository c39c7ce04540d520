//! The history store on a full disk.
