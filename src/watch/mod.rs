//! The watch: what the gateway sees of an attack, turned into one vigilance level per tenant
//! (and a global one) that operators and the rest of Rempart act on; being built in steps
//! (`docs/watch.md` says what exists). `level`, `baseline` and `assess` are pure decision
//! code taking `now`; `service` feeds them the pipeline's signals.
//!
//! - `level`: the vigilance levels (vert, jaune, orange, rouge) and the machine that moves
//!   between them: raise at once, lower one step at a time after a quiet period, never flap;
//!   operators' overrides with an expiry.
//! - `baseline`: the usual value of a rate for each hour of the week, learnt while calm.
//! - `assess`: what level a second of signals calls for, and the evidence: the request rate
//!   against its baseline (new sources raise it a step), shedding, origin errors, failed
//!   logins, connection trips, the data guard's breaches.
//! - `service`: the watch at work, a consumer of the pipeline's signals: each tenant's level
//!   once a second, its changes logged with their evidence and shown in a metric.

pub mod alert;
pub mod assess;
pub mod baseline;
pub mod certificates;
pub mod incident;
pub mod level;
pub mod service;
pub mod shared;
pub mod store;
