//! The status boards in a cluster: one node writes them all (the holder of the status
//! lease, `PREFIX:status-lease`), tells every board as it now stands on `PREFIX:status` and
//! keeps it in the hash `PREFIX:status-boards` for nodes that start later; the others show
//! it, and send the writer their operators' and residents' changes on the same channel
//! (operators wait for its answer, residents never do).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{lock, Cluster};
use crate::status::shared::{Answer, Change, Pending, Shared, SharedBoard};

/// How long an operator's change waits for the writer's answer.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// Changes sent to the writer and not yet told, at most (beyond, the oldest are dropped:
/// residents' requests during a long Redis outage).
const PENDING_CHANGES: usize = 1024;

/// What nodes tell each other about the status boards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StatusNews {
    /// The writer's board for a tenant.
    Board {
        /// The writer.
        node: String,
        /// The board.
        board: Box<SharedBoard>,
    },
    /// The writer's maintenance switches: (tenant, route or `*`).
    Maintenance {
        /// The writer.
        node: String,
        /// The switches in force.
        switches: Vec<(String, String)>,
    },
    /// A change for the writer.
    Change {
        /// The node that sends it.
        node: String,
        /// Its number, for the answer (0: no answer wanted).
        id: u64,
        /// The change.
        change: Change,
    },
    /// The writer's answer.
    Answer {
        /// The node that sent the change.
        to: String,
        /// The change's number.
        id: u64,
        /// The answer.
        answer: Answer,
    },
}

/// What this node has to tell about the boards, not yet written.
#[derive(Debug, Default)]
pub struct BoardsPending {
    /// The latest board of each tenant (an older one is never worth telling).
    pub boards: std::collections::BTreeMap<String, SharedBoard>,
    /// The latest maintenance switches.
    pub maintenance: Option<Vec<(String, String)>>,
    /// Changes for the writer, and answers to others' changes.
    pub messages: std::collections::VecDeque<StatusNews>,
}

impl BoardsPending {
    /// Whether there is nothing to tell.
    pub fn is_empty(&self) -> bool {
        self.boards.is_empty() && self.maintenance.is_none() && self.messages.is_empty()
    }
}

/// The status boards' side of a cluster node.
pub struct ClusterBoards(pub Arc<Cluster>);

impl Shared for ClusterBoards {
    fn writes(&self) -> bool {
        self.0.writes_boards()
    }

    fn forward(&self, change: Change) -> Pending<Option<Answer>> {
        let cluster = self.0.clone();
        if cluster.degraded() {
            return Box::pin(async { None });
        }
        let id = cluster.next_change.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock(&cluster.answers_waited).insert(id, tx);
        cluster.queue_status(StatusNews::Change {
            node: cluster.settings.node.clone(),
            id,
            change,
        });
        Box::pin(async move {
            let answer = tokio::time::timeout(ANSWER_WITHIN, rx).await;
            lock(&cluster.answers_waited).remove(&id);
            answer.ok().and_then(Result::ok)
        })
    }

    fn send(&self, change: Change) {
        self.0.queue_status(StatusNews::Change {
            node: self.0.settings.node.clone(),
            id: 0,
            change,
        });
    }

    fn board(&self, board: SharedBoard) {
        lock(&self.0.boards_pending)
            .boards
            .insert(board.tenant.clone(), board);
        self.0.wake.notify_one();
    }

    fn maintenance(&self, switches: Vec<(String, String)>) {
        lock(&self.0.boards_pending).maintenance = Some(switches);
        self.0.wake.notify_one();
    }
}

impl Cluster {
    /// Shares the status boards of `status`: written by the lease holder, shown by all.
    pub fn attach_status(self: &Arc<Self>, status: Arc<crate::status::StatusService>) {
        status.share_with(Arc::new(ClusterBoards(self.clone())));
        let _ = self.status.set(status);
    }

    /// Queues a change or an answer for the others (the oldest dropped past the bound).
    fn queue_status(&self, news: StatusNews) {
        let mut pending = lock(&self.boards_pending);
        if pending.messages.len() >= PENDING_CHANGES {
            pending.messages.pop_front();
        }
        pending.messages.push_back(news);
        drop(pending);
        self.wake.notify_one();
    }

    /// Whether this node writes the status boards now.
    pub fn writes_boards(&self) -> bool {
        self.status_lease.load(Ordering::Relaxed) || self.alone_past_a_lease()
    }

    /// Another node's news about the boards.
    pub(super) fn status_from(&self, news: StatusNews, now_s: u64) {
        let Some(status) = self.status.get() else {
            return;
        };
        let me = &self.settings.node;
        match news {
            StatusNews::Board { node, board } if &node != me && !self.writes_boards() => {
                status.adopt(*board, now_s);
            }
            StatusNews::Maintenance { node, switches } if &node != me && !self.writes_boards() => {
                status.adopt_maintenance(switches);
            }
            StatusNews::Change { node, id, change } if &node != me && self.writes_boards() => {
                let answer = status.apply_here(change, now_s);
                if id != 0 {
                    self.queue_status(StatusNews::Answer {
                        to: node,
                        id,
                        answer,
                    });
                }
            }
            StatusNews::Answer { to, id, answer } if &to == me => {
                if let Some(waiting) = lock(&self.answers_waited).remove(&id) {
                    let _ = waiting.send(answer);
                }
            }
            _ => {}
        }
    }

    /// This node took the status lease: it tells every board, so the others show its own.
    pub(super) fn took_status_lease(&self) {
        tracing::info!(target: "rempart::cluster", node = %self.settings.node, "this node writes the status boards (status lease)");
        if let Some(status) = self.status.get() {
            status.tell_all(crate::clock::unix_now());
        }
    }
}
