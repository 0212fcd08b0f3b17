//! The data guard: what citizens' records an account takes out through the back-office
//! routes Rempart protects. Pure decision code, called by the pipeline.
//!
//! - `scan`: the streaming scanner of French personal data (NIR with its key, IBAN, payment
//!   cards, phone numbers, e-mail addresses), chunk boundaries never losing an item.

pub mod scan;
