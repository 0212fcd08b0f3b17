//! The data guard: what citizens' records an account takes out through the back-office
//! routes Rempart protects. Pure decision code, called by the pipeline.
//!
//! - `account`: who is asking (session cookie, Basic user, verified JWT claim, a trusted
//!   proxy's header), kept as a keyed hash.
//! - `answer`: one answer as it streams: its records (a JSON array), the personal data it
//!   shows, masked or cut as the route says.
//! - `book`: a tenant's accounts: what each took, from where, its standing against the
//!   budgets; what operators see.
//! - `budget`: records per account per sliding window against a route's budgets, and the
//!   action (log, alert, slow, block, suspend), in bounded memory.
//! - `distinct`: distinct counts in fixed memory (HyperLogLog): records or persons per
//!   account, however often each was taken.
//! - `ids`: record identifiers in request paths, from a route's templates (`/dossiers/{id}`).
//! - `inflate`: gzip and deflate answers decoded as they stream (bounded), so that the guard
//!   reads what an application compressed anyway.
//! - `journal`: the access journal in SQLite (per account, route and hour: records, kinds
//!   of personal data, distinct persons; suspensions, events), for the breach report. The one
//!   module here that does I/O, on a thread of its own.
//! - `json`: the elements of the array at a path of a JSON answer, counted as it streams.
//! - `simulate`: the exfiltration drill on simulated time (advisers for days, then a
//!   compromised account), through `book`.
//! - `scan`: the streaming scanner of French personal data (NIR with its key, IBAN, payment
//!   cards, phone numbers, e-mail addresses), chunk boundaries never losing an item.

pub mod account;
pub mod answer;
pub mod book;
pub mod budget;
pub mod distinct;
pub mod ids;
pub mod inflate;
pub mod journal;
pub mod json;
pub mod policy;
pub mod scan;
pub mod simulate;
