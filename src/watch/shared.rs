//! Cluster mode's side of the security incidents: every node tells the others its
//! incidents as they change, shows theirs beside its own, and sends an operator's action on
//! another node's incident to that node. When an attack reaches several nodes, each keeps
//! its own incident (its own evidence), and alerts go out from the one that opened first:
//! operators get one alert per attack, not one per node.

use std::pin::Pin;

use serde::{Deserialize, Serialize};

use super::incident::{Incident, Refused};

/// An operator's action on an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Takes it.
    Acknowledge,
    /// Writes in its timeline.
    Note,
    /// Closes it.
    Resolve,
}

/// An operator's action on incident `id` of another node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// The incident's number on its node.
    pub id: u64,
    /// What is done.
    pub kind: ActionKind,
    /// Who does it.
    pub by: String,
    /// What they say.
    pub text: String,
}

/// A boxed future, as trait objects return them.
pub type Pending<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Why an action came to nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Failed {
    /// The incident's node refused it.
    Refused(Refused),
    /// That node did not answer in time (gone, or Redis out of reach).
    NoAnswer,
}

/// What cluster mode provides to the watch.
pub trait Shared: Send + Sync {
    /// This node's name.
    fn node(&self) -> String;
    /// One of this node's incidents changed: tell the others.
    fn told(&self, incident: &Incident);
    /// The others' incidents, as (node, incident), as they last told them.
    fn others(&self) -> Vec<(String, Incident)>;
    /// Sends `action` to `node`; the incident as it then stands.
    fn forward(&self, node: &str, action: Action) -> Pending<Result<Incident, Failed>>;
}

/// Whether `incident` (this node's, `node`) is the one that alerts for its tenant: no other
/// node's active incident of the same tenant opened before it.
pub fn leads(incident: &Incident, node: &str, others: &[(String, Incident)]) -> bool {
    !others.iter().any(|(other_node, other)| {
        other.tenant == incident.tenant
            && other.active()
            && (other.opened_ms, other_node.as_str()) < (incident.opened_ms, node)
    })
}
