//! HTTP plumbing under the pipeline: request bodies on their way upstream (`body`), stored
//! whole first in memory or on disk (`buffer`), the
//! upstream HTTP/1.1 client and its keep-alive pools (`client`), the origin's field lines
//! kept as received (`fields`), hop-by-hop and forwarding fields (`headers`), servers and
//! balancing (`upstream`) and their active health checks (`health`). Nothing here knows
//! tenants' policies or pages: that is `pipeline` and the feature modules.

pub mod body;
pub mod buffer;
pub mod client;
pub mod fields;
pub mod headers;
pub mod health;
pub mod upstream;
