//! The watch: what the gateway sees of an attack, turned into one vigilance level per tenant
//! (and a global one) that operators and the rest of Rempart act on. Pure decision code,
//! taking `now`; being built in steps (`docs/watch.md` says what exists).
//!
//! - `level`: the vigilance levels (vert, jaune, orange, rouge) and the machine that moves
//!   between them: raise at once, lower one step at a time after a quiet period, never flap;
//!   operators' overrides with an expiry.
//! - `baseline`: the usual value of a rate for each hour of the week, learnt while calm.
//! - `assess`: what level a second of signals calls for, and the evidence: the request rate
//!   against its baseline (new sources raise it a step), shedding, origin errors, failed
//!   logins, connection trips, the data guard's breaches.

pub mod assess;
pub mod baseline;
pub mod level;
