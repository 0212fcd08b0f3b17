//! The link to Redis: connects (again and again, with back-off, while Redis is away),
//! subscribes to the others' changes, writes this node's pending ones, loads the bans in
//! force, then follows: this node's changes as they come, the others' as they are
//! published, a heartbeat every second. Any error ends the session: the node is degraded
//! until the next one succeeds, and what it changed meanwhile is written then.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::boards::StatusNews;
use super::incidents::IncidentNews;
use super::{
    AcmeNews, AnswersFrom, BanChange, Cluster, NodeSeen, TenantNews, ACME_LEASE_MS, NODE_TTL_S,
};

/// The field of `PREFIX:status-boards` that holds the maintenance switches (tenant ids
/// never start with `@`).
const MAINTENANCE_FIELD: &str = "@maintenance";

/// Takes or keeps the renewal lease: renewed when this node holds it, taken when nobody
/// does. Returns 1 or "OK" when this node holds it.
const LEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
";

/// The keys and channels of a cluster (see the module's documentation).
struct Keys {
    bans: String,
    events: String,
    replay: String,
    tenants: String,
    under_attack: String,
    node_prefix: String,
    pass_secret: String,
    acme: String,
    certs: String,
    proofs: String,
    lease: String,
    rates: String,
    guard: String,
    status: String,
    status_boards: String,
    status_lease: String,
    status_secret: String,
    incidents: String,
}

/// First wait before connecting again; doubled up to `RETRY_MAX`.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How long the proofs' hash outlives its last write (an order ends well within it).
const PROOFS_KEPT_MS: i64 = 10 * 60 * 1000;
/// Heartbeat and node list period.
const BEAT: Duration = Duration::from_secs(1);
/// Period of the rate reports (this node's current counts to the others).
pub const RATE_TICK: Duration = Duration::from_millis(100);
/// Longest wait for Redis to connect or answer: past it, Redis counts as away.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Keeps the link until `stop`.
pub async fn run(cluster: Arc<Cluster>, stop: CancellationToken) {
    let mut wait = RETRY_FIRST;
    loop {
        let mut reached = false;
        let outcome = tokio::select! {
            () = stop.cancelled() => return,
            outcome = session(&cluster, &mut reached) => outcome,
        };
        if let Err(why) = outcome {
            cluster.set_degraded(Some(&why), crate::clock::unix_now_ms());
        }
        // Without Redis, nobody can be sure to hold a lease.
        cluster.acme_lease.store(false, Ordering::Relaxed);
        cluster.status_lease.store(false, Ordering::Relaxed);
        if reached {
            wait = RETRY_FIRST;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(RETRY_MAX);
    }
}

fn keys(cluster: &Cluster) -> Keys {
    let p = &cluster.settings.key_prefix;
    Keys {
        bans: format!("{p}:bans"),
        events: format!("{p}:events"),
        replay: format!("{p}:replay"),
        tenants: format!("{p}:tenants"),
        under_attack: format!("{p}:under-attack"),
        node_prefix: format!("{p}:node:"),
        pass_secret: format!("{p}:pass-secret"),
        acme: format!("{p}:acme"),
        certs: format!("{p}:certs"),
        proofs: format!("{p}:acme-proofs"),
        lease: format!("{p}:acme-lease"),
        rates: format!("{p}:rates"),
        guard: format!("{p}:guard"),
        status: format!("{p}:status"),
        status_boards: format!("{p}:status-boards"),
        status_lease: format!("{p}:status-lease"),
        status_secret: format!("{p}:status-secret"),
        incidents: format!("{p}:incidents"),
    }
}

/// A secret the cluster shares (`what` it is for): the one in Redis, or one made now if
/// there is none (the first node to ask makes it).
async fn shared_secret(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    what: &str,
) -> Result<[u8; 32], String> {
    let mine: String = crate::shield::pass::KeyRing::random_secret()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    within(
        what,
        redis::cmd("SET")
            .arg(key)
            .arg(&mine)
            .arg("NX")
            .query_async::<Option<String>>(conn),
    )
    .await?;
    let held: String = within(what, redis::cmd("GET").arg(key).query_async(conn)).await?;
    let damaged = || format!("{what}: the secret in Redis is damaged");
    if held.len() != 64 || !held.is_ascii() {
        return Err(damaged());
    }
    let mut secret = [0u8; 32];
    for (i, byte) in secret.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&held[2 * i..2 * i + 2], 16).map_err(|_| damaged())?;
    }
    Ok(secret)
}

/// The client of the Redis server to use now: the URL's, or the master the Sentinels name.
async fn client(cluster: &Cluster) -> Result<redis::Client, String> {
    use redis::IntoConnectionInfo;
    let settings = &cluster.settings;
    let mut info = settings
        .redis
        .as_str()
        .into_connection_info()
        .map_err(|e| format!("the Redis URL cannot be used: {e}"))?;
    if let Some(password) = &settings.password {
        let redis = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(redis);
    }
    let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
    let certificates = || redis::TlsCertificates {
        client_tls: None,
        root_cert: settings.ca_pem.clone(),
    };
    let Some((master, sentinels)) = &settings.sentinel else {
        return if settings.ca_pem.is_some() {
            redis::Client::build_with_tls(info, certificates())
        } else {
            redis::Client::open(info)
        }
        .map_err(|e| e.to_string());
    };
    let addresses = sentinels.iter().map(|(host, port)| {
        if tls {
            redis::ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: false,
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(host.clone(), *port)
        }
    });
    let redis_settings = info.redis_settings();
    let mut builder = redis::sentinel::SentinelClientBuilder::new(
        addresses,
        master,
        redis::sentinel::SentinelServerType::Master,
    )
    .map_err(|e| e.to_string())?
    .set_client_to_redis_db(redis_settings.db());
    if let Some(user) = redis_settings.username() {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(password) = redis_settings.password() {
        builder = builder.set_client_to_redis_password(password);
    }
    if tls {
        builder = builder
            .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
            .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
        if settings.ca_pem.is_some() {
            builder = builder
                .set_client_to_redis_certificates(certificates())
                .set_client_to_sentinel_certificates(certificates());
        }
    }
    let mut sentinel = builder.build().map_err(|e| e.to_string())?;
    within(
        "asking the Sentinels for the master",
        sentinel.async_get_client(),
    )
    .await
}

async fn within<T>(
    what: &str,
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {} s", TIMEOUT.as_secs())),
    }
}

/// A hash's fields and values (`what` names it in the error).
async fn load_hash(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    what: &str,
) -> Result<std::collections::HashMap<String, String>, String> {
    within(what, redis::cmd("HGETALL").arg(key).query_async(conn)).await
}

/// One session with Redis; returns why it ended. `reached` is set once Redis answered.
async fn session(cluster: &Cluster, reached: &mut bool) -> Result<(), String> {
    let keys = keys(cluster);
    // A node that wrote the status boards alone keeps what it wrote if it takes the lease.
    let wrote_alone = cluster.writes_boards();
    let (bans_key, events, node_prefix) = (&keys.bans, &keys.events, &keys.node_prefix);
    let client = client(cluster).await?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT));
    let mut conn = within(
        "connecting",
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await?;
    // Subscribed before loading: a change published between the two is not missed.
    let mut pubsub = within("subscribing", client.get_async_pubsub()).await?;
    within(
        "subscribing",
        pubsub.subscribe(&[
            events.as_str(),
            keys.replay.as_str(),
            keys.tenants.as_str(),
            keys.acme.as_str(),
            keys.rates.as_str(),
            keys.guard.as_str(),
            keys.status.as_str(),
            keys.incidents.as_str(),
        ]),
    )
    .await?;
    let mut messages = pubsub.into_on_message();
    *reached = true;
    // Passes and challenges signed alike on every node (unless the configuration names its
    // own keys, which the generations then use instead).
    if let Some(defence) = cluster.defence.get() {
        let secret = shared_secret(&mut conn, &keys.pass_secret, "sharing the pass key").await?;
        if defence.adopt_shared_secret(secret) {
            tracing::info!(target: "rempart::cluster", "passes and challenges signed with the cluster's shared key");
        }
    }

    // What Redis holds. An empty hash while this node has bans: Redis lost its data (a
    // restart without persistence) or this is the first node; either way the others learn
    // this node's bans.
    let held = load_hash(&mut conn, bans_key, "loading bans").await?;
    if held.is_empty() {
        cluster.queue_all_local(crate::clock::unix_now_ms());
    }
    write_pending(cluster, &mut conn, &keys).await?;
    let now = crate::clock::unix_now_ms();
    let mut over = Vec::new();
    for (target, text) in &held {
        match serde_json::from_str::<BanChange>(text) {
            Ok(change) if change.until_ms.is_some_and(|end| end <= now) => {
                over.push(target.clone())
            }
            Ok(change) => {
                cluster.apply_remote(&change, now);
            }
            Err(_) => over.push(target.clone()),
        }
    }
    if !over.is_empty() {
        within(
            "dropping ended bans",
            redis::cmd("HDEL")
                .arg(bans_key)
                .arg(&over)
                .query_async::<()>(&mut conn),
        )
        .await?;
    }
    // Under-attack switches in force (made by operators on any node).
    let switched = load_hash(&mut conn, &keys.under_attack, "loading under-attack modes").await?;
    for text in switched.values() {
        if let Ok(TenantNews::UnderAttack {
            node,
            tenant,
            until_ms,
        }) = serde_json::from_str::<TenantNews>(text)
        {
            if until_ms > now {
                cluster.under_attack_from(&node, &tenant, until_ms);
            }
        }
    }
    // Certificates obtained by the lease holder (this node's own too, in case its state
    // directory was lost).
    let certs = load_hash(&mut conn, &keys.certs, "loading certificates").await?;
    for text in certs.values() {
        if let Ok(AcmeNews::Certificate {
            tenant, chain, key, ..
        }) = serde_json::from_str::<AcmeNews>(text)
        {
            if let Some(effects) = cluster.effects.get() {
                effects.certificate(&tenant, &chain, &key);
            }
        }
    }
    // Proofs of an order under way on another node: the authority may check this one.
    let proofs = load_hash(&mut conn, &keys.proofs, "loading proofs").await?;
    for text in proofs.values() {
        if let Ok(news @ AcmeNews::Proof { .. }) = serde_json::from_str::<AcmeNews>(text) {
            cluster.acme_from(news);
        }
    }
    // The status boards: the residents' links signed alike everywhere; the boards as the
    // writer left them (unless this node wrote alone and takes the writing back).
    if let Some(status) = cluster.status.get() {
        let secret = shared_secret(
            &mut conn,
            &keys.status_secret,
            "sharing the residents' link key",
        )
        .await?;
        status.adopt_link_key(&secret);
        if !wrote_alone {
            load_boards(cluster, &mut conn, &keys).await?;
        }
    }
    // The others' security incidents; this node's own told again (changed meanwhile).
    if let Some(watch) = cluster.watch.get() {
        let held = load_hash(&mut conn, &keys.incidents, "loading incidents").await?;
        for (field, text) in held {
            let node = field
                .rsplit_once('/')
                .map_or("", |(node, _)| node)
                .to_owned();
            if let Ok(incident) = serde_json::from_str(&text) {
                cluster.incident_from(node, incident);
            }
        }
        watch.tell_all();
    }
    cluster.levels_changed.store(true, Ordering::Relaxed);
    leases(cluster, &mut conn, &keys).await?;
    if wrote_alone && !cluster.status_lease.load(Ordering::Relaxed) {
        load_boards(cluster, &mut conn, &keys).await?;
    }
    beat(cluster, &mut conn, node_prefix).await?;
    cluster.set_degraded(None, crate::clock::unix_now_ms());

    let mut beats = tokio::time::interval(BEAT);
    beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rate_ticks = tokio::time::interval(RATE_TICK);
    rate_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether the last report said something (an empty one follows once, then silence).
    let mut reported = false;
    loop {
        tokio::select! {
            () = cluster.wake.notified() => {
                write_pending(cluster, &mut conn, &keys).await?;
            }
            message = messages.next() => {
                let Some(message) = message else {
                    return Err("the subscription ended".into());
                };
                if message.get_channel_name() == keys.guard {
                    if let Ok(news) = serde_json::from_slice::<super::GuardNews>(message.get_payload_bytes()) {
                        cluster.guard_from(news);
                    }
                } else if message.get_channel_name() == keys.rates {
                    if let Some((node, report)) = super::decode_rates(message.get_payload_bytes()) {
                        cluster.rates_from(node, report, crate::clock::unix_now_ms());
                    }
                } else if message.get_channel_name() == keys.incidents {
                    if let Ok(news) = serde_json::from_slice::<IncidentNews>(message.get_payload_bytes()) {
                        cluster.incidents_news(news);
                    }
                } else if message.get_channel_name() == keys.status {
                    if let Ok(news) = serde_json::from_slice::<StatusNews>(message.get_payload_bytes()) {
                        cluster.status_from(news, crate::clock::unix_now());
                    }
                } else if message.get_channel_name() == keys.acme {
                    if let Ok(news) = serde_json::from_slice::<AcmeNews>(message.get_payload_bytes()) {
                        cluster.acme_from(news);
                    }
                } else if message.get_channel_name() == keys.tenants {
                    match serde_json::from_slice::<TenantNews>(message.get_payload_bytes()) {
                        Ok(TenantNews::Levels { node, levels }) => {
                            cluster.levels_from(&node, levels, crate::clock::unix_now_ms());
                        }
                        Ok(TenantNews::UnderAttack { node, tenant, until_ms }) => {
                            cluster.under_attack_from(&node, &tenant, until_ms);
                        }
                        Err(_) => {}
                    }
                } else if message.get_channel_name() == keys.replay {
                    if let Ok(from) = serde_json::from_slice::<AnswersFrom>(message.get_payload_bytes()) {
                        if from.node != cluster.settings.node {
                            for (partition, nonce) in from.answers {
                                cluster.replay_remote(partition, nonce);
                            }
                        }
                    }
                } else if let Ok(change) = serde_json::from_slice::<BanChange>(message.get_payload_bytes()) {
                    if cluster.apply_remote(&change, crate::clock::unix_now_ms()) {
                        tracing::info!(target: "rempart::cluster", target = %change.target, from = %change.node, lifted = change.lifted, "ban from another node");
                    }
                }
            }
            _ = rate_ticks.tick() => {
                let Some(shield) = cluster.effects.get().and_then(|e| e.shield()) else {
                    continue;
                };
                let report = shield.reports(crate::clock::now_ms());
                let busy = report
                    .iter()
                    .any(|(_, r)| !r.current.is_empty() || !r.previous.is_empty());
                if busy || reported {
                    let bytes = super::encode_rates(&cluster.settings.node, &report);
                    within(
                        "reporting rates",
                        redis::cmd("PUBLISH").arg(&keys.rates).arg(bytes).query_async::<()>(&mut conn),
                    )
                    .await?;
                }
                reported = busy;
                // Reports of nodes gone silent stop counting.
                cluster.apply_rates(crate::clock::unix_now_ms());
            }
            _ = beats.tick() => {
                beat(cluster, &mut conn, node_prefix).await?;
                leases(cluster, &mut conn, &keys).await?;
                cluster.expire_levels(crate::clock::unix_now_ms());
                // This node's levels, told again while above vert; and a change queued while
                // a beat was under way.
                if !super::lock(&cluster.own_levels).is_empty() {
                    cluster.levels_changed.store(true, Ordering::Relaxed);
                }
                write_pending(cluster, &mut conn, &keys).await?;
            }
        }
    }
}

/// Writes the pending changes (the hash and the channel, in one round trip); gives them
/// back when Redis does not take them.
async fn write_pending(
    cluster: &Cluster,
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &Keys,
) -> Result<(), String> {
    let (bans_key, events) = (&keys.bans, &keys.events);
    // Answers are told at most once: lost with a broken connection (the others then refuse
    // them only after their own first use, as without a cluster).
    let answers = cluster.take_replay_pending();
    let changes = cluster.take_pending();
    let switches: Vec<(String, u64)> = super::lock(&cluster.under_attack_pending).drain().collect();
    let levels = cluster
        .levels_changed
        .swap(false, Ordering::Relaxed)
        .then(|| {
            let mut own: Vec<_> = super::lock(&cluster.own_levels)
                .iter()
                .map(|(t, l)| (t.clone(), *l))
                .collect();
            own.sort();
            own
        });
    let acme_news = std::mem::take(&mut *super::lock(&cluster.acme_pending));
    // Told at most once, like challenge answers.
    let guard_news = cluster.take_guard_pending();
    let boards = std::mem::take(&mut *super::lock(&cluster.boards_pending));
    let incidents = std::mem::take(&mut *super::lock(&cluster.incidents_pending));
    if changes.is_empty()
        && answers.is_empty()
        && switches.is_empty()
        && levels.is_none()
        && acme_news.is_empty()
        && guard_news.is_none()
        && boards.is_empty()
        && incidents.is_empty()
    {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for incident in incidents.incidents.values() {
        // The hash holds the incident alone; the channel says whose it is.
        let text = serde_json::to_string(incident).map_err(|e| e.to_string())?;
        pipe.hset(
            &keys.incidents,
            super::incidents::field(&cluster.settings.node, incident.id),
            &text,
        )
        .ignore();
        let news = IncidentNews::Incident {
            node: cluster.settings.node.clone(),
            incident: Box::new(incident.clone()),
        };
        let text = serde_json::to_string(&news).map_err(|e| e.to_string())?;
        pipe.publish(&keys.incidents, text).ignore();
    }
    for news in &incidents.messages {
        let text = serde_json::to_string(news).map_err(|e| e.to_string())?;
        pipe.publish(&keys.incidents, text).ignore();
    }
    for board in boards.boards.values() {
        let news = StatusNews::Board {
            node: cluster.settings.node.clone(),
            board: Box::new(board.clone()),
        };
        let text = serde_json::to_string(&news).map_err(|e| e.to_string())?;
        pipe.hset(&keys.status_boards, &board.tenant, &text)
            .ignore();
        pipe.publish(&keys.status, text).ignore();
    }
    if let Some(switches) = &boards.maintenance {
        let news = StatusNews::Maintenance {
            node: cluster.settings.node.clone(),
            switches: switches.clone(),
        };
        let text = serde_json::to_string(&news).map_err(|e| e.to_string())?;
        pipe.hset(&keys.status_boards, MAINTENANCE_FIELD, &text)
            .ignore();
        pipe.publish(&keys.status, text).ignore();
    }
    for news in &boards.messages {
        let text = serde_json::to_string(news).map_err(|e| e.to_string())?;
        pipe.publish(&keys.status, text).ignore();
    }
    if let Some(news) = &guard_news {
        let text = serde_json::to_string(news).map_err(|e| e.to_string())?;
        pipe.publish(&keys.guard, text).ignore();
    }
    // Proofs in the hash before the channel: a node that subscribes after the message
    // loads them (it subscribes before it loads).
    let mut proofs_told = Vec::new();
    for news in &acme_news {
        let text = serde_json::to_string(news).map_err(|e| e.to_string())?;
        match news {
            AcmeNews::Certificate { tenant, .. } => {
                pipe.hset(&keys.certs, tenant, &text).ignore();
            }
            AcmeNews::Proof { proof, active, .. } => {
                if *active {
                    pipe.hset(&keys.proofs, proof.id(), &text).ignore();
                    pipe.pexpire(&keys.proofs, PROOFS_KEPT_MS).ignore();
                    proofs_told.push(proof.id());
                } else {
                    pipe.hdel(&keys.proofs, proof.id()).ignore();
                }
            }
            AcmeNews::Held { .. } => {}
        }
        pipe.publish(&keys.acme, text).ignore();
    }
    if let Some(levels) = levels {
        let text = serde_json::to_string(&TenantNews::Levels {
            node: cluster.settings.node.clone(),
            levels,
        })
        .map_err(|e| e.to_string())?;
        pipe.publish(&keys.tenants, text).ignore();
    }
    for (tenant, until_ms) in &switches {
        let text = serde_json::to_string(&TenantNews::UnderAttack {
            node: cluster.settings.node.clone(),
            tenant: tenant.clone(),
            until_ms: *until_ms,
        })
        .map_err(|e| e.to_string())?;
        if *until_ms == 0 {
            pipe.hdel(&keys.under_attack, tenant).ignore();
        } else {
            pipe.hset(&keys.under_attack, tenant, &text).ignore();
        }
        pipe.publish(&keys.tenants, text).ignore();
    }
    if !answers.is_empty() {
        let text = serde_json::to_string(&AnswersFrom {
            node: cluster.settings.node.clone(),
            answers,
        })
        .map_err(|e| e.to_string())?;
        pipe.publish(&keys.replay, text).ignore();
    }
    for change in &changes {
        let text = serde_json::to_string(change).map_err(|e| e.to_string())?;
        if change.lifted {
            pipe.hdel(bans_key, &change.target).ignore();
        } else {
            pipe.hset(bans_key, &change.target, &text).ignore();
        }
        pipe.publish(events, &text).ignore();
    }
    match within("writing bans", pipe.query_async::<()>(conn)).await {
        Ok(()) => {
            cluster.proofs_published(&proofs_told);
            cluster
                .sent
                .fetch_add(changes.len() as u64, Ordering::Relaxed);
            cluster
                .last_sync_ms
                .store(crate::clock::unix_now_ms(), Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            cluster.give_back(changes);
            let mut pending = super::lock(&cluster.under_attack_pending);
            for (tenant, until) in switches {
                pending.entry(tenant).or_insert(until);
            }
            drop(pending);
            cluster.levels_changed.store(true, Ordering::Relaxed);
            // Incidents are told again (actions and answers are not: the operator retries).
            let mut pending = super::lock(&cluster.incidents_pending);
            for (id, incident) in incidents.incidents {
                pending.incidents.entry(id).or_insert(incident);
            }
            drop(pending);
            // Boards and changes are told again, unless newer ones wait already.
            let mut pending = super::lock(&cluster.boards_pending);
            for (tenant, board) in boards.boards {
                pending.boards.entry(tenant).or_insert(board);
            }
            if pending.maintenance.is_none() {
                pending.maintenance = boards.maintenance;
            }
            for news in boards.messages.into_iter().rev() {
                pending.messages.push_front(news);
            }
            drop(pending);
            // Certificates are told again (proofs are short-lived: the order retries).
            super::lock(&cluster.acme_pending).extend(
                acme_news
                    .into_iter()
                    .filter(|n| matches!(n, AcmeNews::Certificate { .. })),
            );
            Err(e)
        }
    }
}

/// Takes or keeps the leases: certificates (the renewals start at once on taking it) and
/// status boards (the writer tells them all on taking it).
async fn leases(
    cluster: &Cluster,
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &Keys,
) -> Result<(), String> {
    if lease(cluster, conn, &keys.lease, &cluster.acme_lease).await? {
        tracing::info!(target: "rempart::cluster", node = %cluster.settings.node, "this node orders the cluster's certificates (renewal lease)");
        if let Some(acme) = cluster.acme.get() {
            acme.wake.notify_one();
        }
    }
    if cluster.status.get().is_some()
        && lease(cluster, conn, &keys.status_lease, &cluster.status_lease).await?
    {
        cluster.took_status_lease();
    }
    Ok(())
}

/// Takes or keeps the lease `key`, kept in `held`; whether this node has just taken it.
async fn lease(
    cluster: &Cluster,
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    held: &std::sync::atomic::AtomicBool,
) -> Result<bool, String> {
    let answer: redis::Value = within(
        "a lease",
        redis::cmd("EVAL")
            .arg(LEASE_SCRIPT)
            .arg(1)
            .arg(key)
            .arg(&cluster.settings.node)
            .arg(ACME_LEASE_MS)
            .query_async(conn),
    )
    .await?;
    let holds = matches!(answer, redis::Value::Int(1) | redis::Value::Okay)
        || matches!(&answer, redis::Value::SimpleString(s) if s == "OK");
    Ok(holds != held.swap(holds, Ordering::Relaxed) && holds)
}

/// The boards the writer left in Redis, shown here.
async fn load_boards(
    cluster: &Cluster,
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &Keys,
) -> Result<(), String> {
    let held = load_hash(conn, &keys.status_boards, "loading the status boards").await?;
    let Some(status) = cluster.status.get() else {
        return Ok(());
    };
    let now = crate::clock::unix_now();
    for text in held.values() {
        match serde_json::from_str::<StatusNews>(text) {
            Ok(StatusNews::Board { board, .. }) => status.adopt(*board, now),
            Ok(StatusNews::Maintenance { switches, .. }) => status.adopt_maintenance(switches),
            _ => {}
        }
    }
    Ok(())
}

/// This node's heartbeat, and the nodes whose heartbeat is current.
async fn beat(
    cluster: &Cluster,
    conn: &mut redis::aio::MultiplexedConnection,
    node_prefix: &str,
) -> Result<(), String> {
    let now = crate::clock::unix_now_ms();
    let me = NodeSeen {
        node: cluster.settings.node.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        at_ms: now,
        this: false,
    };
    let text = serde_json::to_string(&me).map_err(|e| e.to_string())?;
    within(
        "heartbeat",
        redis::cmd("SET")
            .arg(format!("{node_prefix}{}", me.node))
            .arg(&text)
            .arg("EX")
            .arg(NODE_TTL_S)
            .query_async::<()>(conn),
    )
    .await?;
    // A handful of nodes: one SCAN round, then their heartbeats.
    let mut names: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, found): (u64, Vec<String>) = within(
            "listing nodes",
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{node_prefix}*"))
                .arg("COUNT")
                .arg(100)
                .query_async(conn),
        )
        .await?;
        names.extend(found);
        if next == 0 || names.len() > 1_000 {
            break;
        }
        cursor = next;
    }
    let mut nodes = Vec::new();
    if !names.is_empty() {
        let values: Vec<Option<String>> = within(
            "reading nodes",
            redis::cmd("MGET").arg(&names).query_async(conn),
        )
        .await?;
        for text in values.into_iter().flatten() {
            if let Ok(mut seen) = serde_json::from_str::<NodeSeen>(&text) {
                seen.this = seen.node == cluster.settings.node;
                nodes.push(seen);
            }
        }
    }
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    cluster.nodes_listed(nodes);
    cluster.last_sync_ms.store(now, Ordering::Relaxed);
    cluster.refresh_gauges();
    Ok(())
}
