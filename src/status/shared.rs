//! Cluster mode's side of the status pages: one node writes every board (it holds the
//! cluster's status lease) and tells the others each board as it now stands; the others
//! show exactly that, and send the writer what their operators and residents ask. Only the
//! writer detects component states, opens automatic incidents and sends messages to
//! subscribers, so a resident hears of an update once, whatever node they reached.

use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::model::{ComponentState, DayTally, Incident};
use super::subscribe::{self, Subscriber};
use super::{
    IncidentEdit, NewIncident, NewUpdate, StatusError, StatusService, SubscribeOutcome, DAY_S,
    HISTORY_DAYS,
};
use crate::config::runtime::Language;

/// A change to a board, made by the writer itself or sent to it by another node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// An operator opens an incident or a maintenance window.
    CreateIncident {
        /// Tenant id.
        tenant: String,
        /// What the operator wrote.
        new: NewIncident,
    },
    /// An operator adds an update to an incident's timeline.
    AddUpdate {
        /// Tenant id.
        tenant: String,
        /// Incident id.
        id: u64,
        /// What the operator wrote.
        update: NewUpdate,
    },
    /// An operator edits, publishes or withdraws an incident.
    EditIncident {
        /// Tenant id.
        tenant: String,
        /// Incident id.
        id: u64,
        /// The changes.
        edit: IncidentEdit,
    },
    /// An operator sets a component's state, or gives it back to detection (`None`).
    SetOverride {
        /// Tenant id.
        tenant: String,
        /// Component id.
        component: String,
        /// The state wanted.
        state: Option<ComponentState>,
    },
    /// An operator switches maintenance mode of a route (`None`: the whole tenant).
    SetMaintenance {
        /// Tenant id.
        tenant: String,
        /// Route name.
        route: Option<String>,
        /// On or off.
        on: bool,
    },
    /// A resident asks to follow a tenant's page.
    Subscribe {
        /// Tenant id.
        tenant: String,
        /// Their address (personal data: never logged).
        email: String,
        /// Components followed (empty: all).
        components: Vec<String>,
        /// `fr` or `en`.
        lang: String,
    },
    /// A resident follows the confirmation link.
    Confirm {
        /// Tenant id.
        tenant: String,
        /// The link's token.
        token: String,
    },
    /// A resident follows the unsubscribe link.
    Unsubscribe {
        /// Tenant id.
        tenant: String,
        /// The link's token.
        token: String,
    },
}

/// The writer's answer to a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    /// The incident as it now stands.
    Incident {
        /// The incident.
        incident: Box<Incident>,
    },
    /// Done.
    Done,
    /// Refused, and why.
    Refused {
        /// Why.
        error: StatusError,
    },
}

/// One component of a board as the writer shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedComponent {
    /// Component id.
    pub id: String,
    /// The state shown to residents.
    pub shown: ComponentState,
    /// An operator's state, when set.
    pub overridden: Option<ComponentState>,
    /// When the shown state last changed (Unix seconds).
    pub changed_at: u64,
}

/// A tenant's board as the writer holds it: what every node shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedBoard {
    /// Tenant id.
    pub tenant: String,
    /// When the writer took this picture (Unix seconds).
    pub at: u64,
    /// The components, in the configuration's order.
    pub components: Vec<SharedComponent>,
    /// The tenant's incidents and maintenance windows (drafts included).
    pub incidents: Vec<Incident>,
    /// The writer's last incident id (ids stay unique when another node takes over).
    pub last_id: u64,
    /// History: (component, day, seconds in each state).
    pub days: Vec<(String, u64, DayTally)>,
    /// The tenant's subscribers (personal data: Redis is protected like the database).
    pub subscribers: Vec<Subscriber>,
    /// The writer's last subscriber id.
    pub last_subscriber: u64,
}

/// A boxed future, as trait objects return them.
pub type Pending<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// What cluster mode provides to the status pages.
pub trait Shared: Send + Sync {
    /// Whether this node writes the boards now: it holds the lease, or it has been out of
    /// reach of the others for longer than a lease lasts.
    fn writes(&self) -> bool;
    /// Sends `change` to the writer; its answer, or `None` when none came in time.
    fn forward(&self, change: Change) -> Pending<Option<Answer>>;
    /// Sends `change` to the writer without waiting (residents never wait on the others).
    fn send(&self, change: Change);
    /// The writer tells the others a board as it now stands.
    fn board(&self, board: SharedBoard);
    /// The writer tells the others the maintenance switches in force: (tenant, route or `*`).
    fn maintenance(&self, switches: Vec<(String, String)>);
}

impl Answer {
    fn of(result: Result<Option<Incident>, StatusError>) -> Self {
        match result {
            Ok(Some(incident)) => Self::Incident {
                incident: Box::new(incident),
            },
            Ok(None) => Self::Done,
            Err(error) => Self::Refused { error },
        }
    }
}

impl StatusService {
    /// Cluster mode: boards are written by one node and shown by all.
    pub fn share_with(&self, shared: Arc<dyn Shared>) {
        let _ = self.shared.set(shared);
    }

    /// Whether this node writes the boards (always, outside cluster mode).
    pub fn writes(&self) -> bool {
        self.shared.get().is_none_or(|s| s.writes())
    }

    /// The cluster, when this node only shows what another writes.
    pub(super) fn following(&self) -> Option<&Arc<dyn Shared>> {
        self.shared.get().filter(|s| !s.writes())
    }

    /// An operator's change: made here when this node writes, else sent to the writer
    /// (waiting for its answer, a few seconds at most).
    pub async fn apply(&self, change: Change, now: u64) -> Result<Answer, StatusError> {
        let Some(shared) = self.following() else {
            return Ok(self.apply_here(change, now));
        };
        match shared.forward(change).await {
            Some(Answer::Refused { error }) => Err(error),
            Some(answer) => Ok(answer),
            None => Err(StatusError::NoWriter),
        }
    }

    /// Makes `change` on this node's boards (the writer's side).
    pub fn apply_here(&self, change: Change, now: u64) -> Answer {
        match change {
            Change::CreateIncident { tenant, new } => {
                Answer::of(self.create_incident(&tenant, new, now).map(Some))
            }
            Change::AddUpdate { tenant, id, update } => {
                Answer::of(self.add_update(&tenant, id, update, now).map(Some))
            }
            Change::EditIncident { tenant, id, edit } => {
                Answer::of(self.edit_incident(&tenant, id, edit, now).map(Some))
            }
            Change::SetOverride {
                tenant,
                component,
                state,
            } => Answer::of(
                self.set_override(&tenant, &component, state, now)
                    .map(|()| None),
            ),
            Change::SetMaintenance { tenant, route, on } => {
                self.set_maintenance(&tenant, route.as_deref(), on);
                Answer::Done
            }
            Change::Subscribe {
                tenant,
                email,
                components,
                lang,
            } => {
                let lang = if lang == "en" {
                    Language::En
                } else {
                    Language::Fr
                };
                Answer::of(
                    self.subscribe(&tenant, &email, components, lang, now)
                        .map(|_| None),
                )
            }
            Change::Confirm { tenant, token } => {
                self.confirm(&tenant, &token);
                Answer::Done
            }
            Change::Unsubscribe { tenant, token } => {
                self.unsubscribe(&tenant, &token);
                Answer::Done
            }
        }
    }

    /// The writer tells the others `tenant_id`'s board, when in cluster mode.
    pub(super) fn told(&self, tenant_id: &str, now: u64) {
        if let Some(shared) = self.shared.get().filter(|s| s.writes()) {
            if let Some(board) = self.board_of(tenant_id, now) {
                shared.board(board);
            }
        }
    }

    /// The writer tells the others every board and the maintenance switches (when it takes
    /// the lease, so nodes that missed a change catch up).
    pub fn tell_all(&self, now: u64) {
        let Some(shared) = self.shared.get() else {
            return;
        };
        for tenant in self.tenants() {
            if let Some(board) = self.board_of(&tenant, now) {
                shared.board(board);
            }
        }
        shared.maintenance(self.maintenance_list());
    }

    /// `tenant_id`'s board as this node holds it, history accrued up to `now`.
    pub fn board_of(&self, tenant_id: &str, now: u64) -> Option<SharedBoard> {
        let mut st = self.lock();
        super::refresh_shown(&mut st, tenant_id, now);
        let board = st.boards.get(tenant_id)?;
        let components = board
            .components
            .iter()
            .map(|c| SharedComponent {
                id: c.id.clone(),
                shown: c.shown,
                overridden: c.overridden,
                changed_at: c.changed_at,
            })
            .collect();
        let oldest = (now / DAY_S).saturating_sub(HISTORY_DAYS);
        let mut days: std::collections::BTreeMap<(String, u64), DayTally> = Default::default();
        for source in [&st.days, &st.pending_days] {
            for ((t, c, d), tally) in source {
                if t == tenant_id && *d >= oldest {
                    let e = days.entry((c.clone(), *d)).or_insert([0; 5]);
                    for (x, y) in e.iter_mut().zip(tally) {
                        *x = x.saturating_add(*y);
                    }
                }
            }
        }
        let incidents = st
            .incidents
            .values()
            .filter(|i| i.tenant == tenant_id)
            .cloned()
            .collect();
        let last_id = st.last_id;
        drop(st);
        let subs = self.subs();
        let mut subscribers: Vec<Subscriber> = subs
            .by_id
            .values()
            .filter(|s| s.tenant == tenant_id)
            .cloned()
            .collect();
        subscribers.sort_by_key(|s| s.id);
        Some(SharedBoard {
            tenant: tenant_id.to_owned(),
            at: now,
            components,
            incidents,
            last_id,
            days: days.into_iter().map(|((c, d), t)| (c, d, t)).collect(),
            subscribers,
            last_subscriber: subs.next_id,
        })
    }

    /// Shows the writer's `board` (a node that does not write). Kept in this node's
    /// database too, so that it can take over the writing with the whole history.
    pub fn adopt(&self, board: SharedBoard, now: u64) {
        let tenant = board.tenant.as_str();
        let store = self.store.get();
        {
            let mut guard = self.lock();
            let st = &mut *guard;
            // A tenant this node's configuration does not have a page for: nothing to show.
            let Some(b) = st.boards.get_mut(tenant) else {
                return;
            };
            for shared in &board.components {
                let Some(c) = b.components.iter_mut().find(|c| c.id == shared.id) else {
                    continue;
                };
                if c.overridden != shared.overridden {
                    if let Some(store) = store {
                        store.set_override(tenant, &c.id, shared.overridden);
                    }
                }
                c.shown = shared.shown;
                c.overridden = shared.overridden;
                c.changed_at = shared.changed_at;
                c.accrued_to = board.at;
                c.auto_incident = board
                    .incidents
                    .iter()
                    .find(|i| i.automatic && i.is_open() && i.components.contains(&c.id))
                    .map(|i| i.id);
            }
            let ids: std::collections::HashSet<u64> =
                board.incidents.iter().map(|i| i.id).collect();
            st.incidents
                .retain(|id, i| i.tenant != tenant || ids.contains(id));
            for incident in &board.incidents {
                if st.incidents.get(&incident.id) != Some(incident) {
                    if let Some(store) = store {
                        store.save_incident(incident);
                    }
                    st.incidents.insert(incident.id, incident.clone());
                }
            }
            st.last_id = st.last_id.max(board.last_id);
            st.days.retain(|(t, _, _), _| t != tenant);
            st.pending_days.retain(|(t, _, _), _| t != tenant);
            for (component, day, tally) in &board.days {
                st.days
                    .insert((tenant.to_owned(), component.clone(), *day), *tally);
            }
        }
        {
            let mut subs = self.subs();
            let kept: std::collections::HashSet<u64> =
                board.subscribers.iter().map(|s| s.id).collect();
            let gone: Vec<u64> = subs
                .by_id
                .values()
                .filter(|s| s.tenant == tenant && !kept.contains(&s.id))
                .map(|s| s.id)
                .collect();
            for id in gone {
                subs.by_id.remove(&id);
                if let Some(store) = store {
                    store.delete_subscriber(id);
                }
            }
            for s in &board.subscribers {
                if subs.by_id.get(&s.id) != Some(s) {
                    if let Some(store) = store {
                        store.save_subscriber(s);
                    }
                    subs.by_id.insert(s.id, s.clone());
                }
            }
            subs.next_id = subs.next_id.max(board.last_subscriber);
        }
        self.render_tenant(tenant, now);
    }

    /// Takes the writer's maintenance switches (a node that does not write).
    pub fn adopt_maintenance(&self, switches: Vec<(String, String)>) {
        let before = self.maintenance_list();
        if let Some(store) = self.store.get() {
            for (t, r) in &before {
                if !switches.contains(&(t.clone(), r.clone())) {
                    store.set_maintenance(t, r, false);
                }
            }
            for (t, r) in &switches {
                if !before.contains(&(t.clone(), r.clone())) {
                    store.set_maintenance(t, r, true);
                }
            }
        }
        self.maintenance.store(Arc::new(switches));
    }

    /// The cluster's key for the residents' links (confirm, unsubscribe), so a link made by
    /// the writer works on every node.
    pub fn adopt_link_key(&self, secret: &[u8]) {
        self.subs().tokens = subscribe::Tokens::new(secret);
    }

    /// A resident's subscription request on a node that does not write: checked here (the
    /// page says the same in every case), made by the writer.
    pub(super) fn subscribe_through(
        &self,
        shared: &Arc<dyn Shared>,
        tenant_id: &str,
        email: &str,
        components: Vec<String>,
        lang: Language,
    ) -> Result<SubscribeOutcome, StatusError> {
        let email = email.trim();
        if !subscribe::valid_email(email) {
            return Err(StatusError::Invalid("invalid e-mail address".into()));
        }
        shared.send(Change::Subscribe {
            tenant: tenant_id.to_owned(),
            email: email.to_owned(),
            components,
            lang: if lang == Language::En { "en" } else { "fr" }.to_owned(),
        });
        Ok(SubscribeOutcome::ConfirmationSent)
    }

    /// A resident's link on a node that does not write: a genuine token is answered here
    /// and carried out by the writer.
    pub(super) fn link_through(
        &self,
        shared: &Arc<dyn Shared>,
        tenant_id: &str,
        token: &str,
        purpose: subscribe::Purpose,
    ) -> bool {
        if self.subs().tokens.check(token, purpose).is_none() {
            return false;
        }
        let (tenant, token) = (tenant_id.to_owned(), token.to_owned());
        shared.send(match purpose {
            subscribe::Purpose::Confirm => Change::Confirm { tenant, token },
            subscribe::Purpose::Unsubscribe => Change::Unsubscribe { tenant, token },
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[[listeners]]
address = "127.0.0.1:0"

[[tenants]]
id = "ville"
name = "Ville"
hosts = ["ville.test"]
[[tenants.pools]]
name = "web"
servers = [{ address = "127.0.0.1:9" }]
[[tenants.routes]]
name = "etat-civil"
pool = "web"
[tenants.status]
[[tenants.status.components]]
id = "etat-civil"
name = "État civil"
routes = ["etat-civil"]
"#;

    fn service(now: u64) -> StatusService {
        let config =
            crate::config::load_str(CONFIG, std::path::Path::new("/tmp/rempart.toml")).unwrap();
        StatusService::empty(&config, now)
    }

    /// What residents read on `s`'s page.
    fn summary(s: &StatusService) -> String {
        String::from_utf8_lossy(&s.pages("ville").unwrap().json.body).into_owned()
    }

    #[test]
    fn a_board_told_by_the_writer_is_shown_alike_and_carries_its_history() {
        let day = 20_000 * DAY_S;
        let (writer, follower) = (service(day), service(day));
        let new = NewIncident {
            kind: super::super::model::IncidentKind::Incident,
            title: "Coupure".into(),
            title_en: None,
            impact: None,
            components: vec!["etat-civil".into()],
            status: None,
            message: "Le site ne répond plus.".into(),
            message_en: None,
            publish: true,
            starts_at: None,
            ends_at: None,
        };
        let Answer::Incident { incident } = writer.apply_here(
            Change::CreateIncident {
                tenant: "ville".into(),
                new,
            },
            day + 60,
        ) else {
            panic!("no incident")
        };
        writer.apply_here(
            Change::SetOverride {
                tenant: "ville".into(),
                component: "etat-civil".into(),
                state: Some(ComponentState::MajorOutage),
            },
            day + 120,
        );
        let board = writer.board_of("ville", day + 600).unwrap();
        // Ten minutes of history: two operational, eight in outage.
        let (_, _, tally) = &board.days[0];
        assert_eq!(tally.iter().sum::<u32>(), 600);
        assert_eq!(tally[ComponentState::MajorOutage.index()], 480);
        // Through JSON, as it crosses Redis.
        let crossed: SharedBoard =
            serde_json::from_str(&serde_json::to_string(&board).unwrap()).unwrap();
        assert_eq!(crossed, board);
        follower.adopt(crossed, day + 600);
        writer.render_tenant("ville", day + 600);
        assert_eq!(summary(&follower), summary(&writer));
        assert!(summary(&follower).contains("Coupure"));
        // The follower takes over later with the writer's ids: its next incident does not
        // reuse one.
        assert!(follower.lock().last_id >= incident.id);
        // A later board without the incident (withdrawn on the writer) removes it here.
        let mut emptied = board.clone();
        emptied.incidents.clear();
        follower.adopt(emptied, day + 660);
        assert!(!summary(&follower).contains("Coupure"));
    }

    #[test]
    fn changes_and_answers_cross_as_json() {
        let change = Change::SetMaintenance {
            tenant: "ville".into(),
            route: Some("etat-civil".into()),
            on: true,
        };
        let text = serde_json::to_string(&change).unwrap();
        assert_eq!(serde_json::from_str::<Change>(&text).unwrap(), change);
        let refused = Answer::Refused {
            error: StatusError::UnknownIncident(7),
        };
        let text = serde_json::to_string(&refused).unwrap();
        assert_eq!(serde_json::from_str::<Answer>(&text).unwrap(), refused);
    }
}
