//! The canonical request: one reading of the target and the host, taken before any decision.
//! `path` normalises the path (what is routed and checked is what is forwarded); `authority`
//! decides which host the request is for (the host the tenant is chosen by is the `Host` the
//! origin receives). Pure functions: the pipeline's first phase applies them.

pub mod authority;
pub mod path;
