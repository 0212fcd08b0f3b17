//! How a phase ends: `Flow<T>` is `Ok(T)` to continue with `T`, or an `End`: answer locally
//! (a page built by the gateway) or fail with an error. Every `End` becomes a response in
//! one place, `pipeline::respond`.

use bytes::Bytes;
use http::Response;

use crate::error::Failure;
use crate::shield::pass::Binding;
use crate::signals::LocalReason;

/// The result of a phase: continue with `T`, or end the request here.
pub type Flow<T> = Result<T, End>;

/// Why a request ends before (or instead of) the origin's answer.
#[derive(Debug)]
pub enum End {
    /// Answer with a page built by the gateway (boxed: phases return `Flow` on the hot path,
    /// and a page is large).
    Answer(Box<Local>),
    /// Fail: the error's branded page (`pipeline::respond`).
    Fail(Failure),
}

impl From<crate::error::ProxyError> for End {
    fn from(error: crate::error::ProxyError) -> Self {
        End::Fail(error.into())
    }
}

impl From<Failure> for End {
    fn from(failure: Failure) -> Self {
        End::Fail(failure)
    }
}

/// A page the gateway answers with itself.
#[derive(Debug)]
pub enum Local {
    /// A ready page (status site, `/.rempart/` pages) with the access log's reason.
    Page {
        /// The page.
        page: Response<Bytes>,
        /// The access log's `reason`.
        reason: &'static str,
        /// The signal it counts as.
        signal: LocalReason,
    },
    /// The proof-of-work challenge, bound to this client, sending it to `return_to` after.
    Challenge {
        /// What the pass will be bound to.
        binding: Binding,
        /// Where the browser goes once it holds a pass.
        return_to: String,
    },
    /// A stale copy of the page (the origin failed).
    Stale(Response<Bytes>),
}

impl Local {
    /// Ends the request with this answer.
    pub fn end(self) -> End {
        End::Answer(Box::new(self))
    }

    /// A ready page.
    pub fn page(page: Response<Bytes>, reason: &'static str, signal: LocalReason) -> End {
        End::Answer(Box::new(Local::Page {
            page,
            reason,
            signal,
        }))
    }
}
