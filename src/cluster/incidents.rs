//! Security incidents in a cluster: each node tells its incidents as they change on
//! `PREFIX:incidents` and keeps them in the hash `PREFIX:incidents` (field `NODE/NUMBER`)
//! for nodes that start later; every node shows the others' beside its own, and sends an
//! operator's action on another node's incident to that node on the same channel, which
//! answers with the incident as it then stands.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{lock, Cluster};
use crate::watch::incident::{Incident, Refused};
use crate::watch::shared::{Action, Failed, Pending, Shared};

/// How long an operator's action waits for the incident's node.
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Actions and answers not yet told, at most.
const PENDING_MESSAGES: usize = 256;

/// What nodes tell each other about their incidents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IncidentNews {
    /// A node's incident as it now stands.
    Incident {
        /// Its node.
        node: String,
        /// The incident.
        incident: Box<Incident>,
    },
    /// An operator's action for another node's incident.
    Action {
        /// The incident's node.
        to: String,
        /// The node that sends it.
        from: String,
        /// Its number, for the answer.
        request: u64,
        /// The action.
        action: Action,
    },
    /// The incident's node's answer.
    Answer {
        /// The node that sent the action.
        to: String,
        /// The action's number.
        request: u64,
        /// The incident as it now stands, or why not.
        result: Result<Box<Incident>, Refused>,
    },
}

/// What this node has to tell about incidents, not yet written.
#[derive(Debug, Default)]
pub struct IncidentsPending {
    /// This node's incidents that changed, by number (the latest state only).
    pub incidents: std::collections::BTreeMap<u64, Incident>,
    /// Actions and answers.
    pub messages: std::collections::VecDeque<IncidentNews>,
}

impl IncidentsPending {
    /// Whether there is nothing to tell.
    pub fn is_empty(&self) -> bool {
        self.incidents.is_empty() && self.messages.is_empty()
    }

    fn push(&mut self, news: IncidentNews) {
        if self.messages.len() >= PENDING_MESSAGES {
            self.messages.pop_front();
        }
        self.messages.push_back(news);
    }
}

/// Where the answer to an operator's action waits.
pub type AnswerTo = tokio::sync::oneshot::Sender<Result<Box<Incident>, Refused>>;

/// The field of an incident in `PREFIX:incidents`.
pub fn field(node: &str, id: u64) -> String {
    format!("{node}/{id}")
}

/// The watch's side of a cluster node.
pub struct ClusterIncidents(pub Arc<Cluster>);

impl Shared for ClusterIncidents {
    fn node(&self) -> String {
        self.0.settings.node.clone()
    }

    fn told(&self, incident: &Incident) {
        lock(&self.0.incidents_pending)
            .incidents
            .insert(incident.id, incident.clone());
        self.0.wake.notify_one();
    }

    fn others(&self) -> Vec<(String, Incident)> {
        lock(&self.0.others_incidents)
            .iter()
            .map(|((node, _), incident)| (node.clone(), incident.clone()))
            .collect()
    }

    fn forward(&self, node: &str, action: Action) -> Pending<Result<Incident, Failed>> {
        let cluster = self.0.clone();
        if cluster.degraded() {
            return Box::pin(async { Err(Failed::NoAnswer) });
        }
        let request = cluster.next_change.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock(&cluster.incident_answers).insert(request, tx);
        lock(&cluster.incidents_pending).push(IncidentNews::Action {
            to: node.to_owned(),
            from: cluster.settings.node.clone(),
            request,
            action,
        });
        cluster.wake.notify_one();
        Box::pin(async move {
            let answer = tokio::time::timeout(ANSWER_WITHIN, rx).await;
            lock(&cluster.incident_answers).remove(&request);
            match answer {
                Ok(Ok(Ok(incident))) => Ok(*incident),
                Ok(Ok(Err(refused))) => Err(Failed::Refused(refused)),
                _ => Err(Failed::NoAnswer),
            }
        })
    }
}

impl Cluster {
    /// Shares the security incidents of `watch`.
    pub fn attach_watch(self: &Arc<Self>, watch: Arc<crate::watch::service::WatchService>) {
        watch.share_with(Arc::new(ClusterIncidents(self.clone())));
        let _ = self.watch.set(watch);
    }

    /// Another node's incident, as told or as kept in Redis.
    pub(super) fn incident_from(&self, node: String, incident: Incident) {
        if node != self.settings.node {
            lock(&self.others_incidents).insert((node, incident.id), incident);
        }
    }

    /// Another node's news about incidents.
    pub(super) fn incidents_news(&self, news: IncidentNews) {
        let me = &self.settings.node;
        match news {
            IncidentNews::Incident { node, incident } => self.incident_from(node, *incident),
            IncidentNews::Action {
                to,
                from,
                request,
                action,
            } if &to == me => {
                let Some(watch) = self.watch.get().cloned() else {
                    return;
                };
                // Made on this node, answered with the incident (the action's own news
                // follows as the incident changes).
                let now_ms = crate::clock::unix_now_ms();
                let (id, by, text) = (action.id, action.by.as_str(), action.text.as_str());
                let result = match action.kind {
                    crate::watch::shared::ActionKind::Acknowledge => {
                        watch.acknowledge(id, by, now_ms)
                    }
                    crate::watch::shared::ActionKind::Note => watch.note(id, by, text, now_ms),
                    crate::watch::shared::ActionKind::Resolve => {
                        watch.resolve(id, by, text, now_ms)
                    }
                };
                tracing::info!(target: "rempart::cluster", incident = id, from = %from, action = ?action.kind, ok = result.is_ok(), "an operator's action from another node");
                lock(&self.incidents_pending).push(IncidentNews::Answer {
                    to: from,
                    request,
                    result: result.map(Box::new),
                });
                self.wake.notify_one();
            }
            IncidentNews::Answer {
                to,
                request,
                result,
            } if &to == me => {
                if let Some(waiting) = lock(&self.incident_answers).remove(&request) {
                    let _ = waiting.send(result);
                }
            }
            _ => {}
        }
    }
}
