//! Every Prometheus metric Rempart exports, named in one place (documented in
//! `docs/metrics.md`). Hot-path handles (per route, per server) are resolved once per
//! configuration generation so a request never hashes label sets.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// `rempart_requests_total{tenant,route,status_class}`.
pub const REQUESTS_TOTAL: &str = "rempart_requests";
/// `rempart_upstream_response_seconds{tenant,pool}`: time to the upstream response head.
pub const UPSTREAM_RESPONSE_SECONDS: &str = "rempart_upstream_response_seconds";
/// `rempart_downstream_connections_active`.
pub const CONNECTIONS_ACTIVE: &str = "rempart_downstream_connections_active";
/// `rempart_downstream_connections_total{result}` (`accepted`, `rejected_limit`,
/// `rejected_per_address`, `proxy_protocol_error`, `tls_error`).
pub const CONNECTIONS_TOTAL: &str = "rempart_downstream_connections";
/// `rempart_upstream_server_healthy{tenant,pool,server}`: 1 healthy, 0 out of rotation.
pub const UPSTREAM_HEALTHY: &str = "rempart_upstream_server_healthy";
/// `rempart_upstream_retries_total{tenant,pool}`.
pub const UPSTREAM_RETRIES: &str = "rempart_upstream_retries";
/// `rempart_shield_decisions_total{tenant,rule,action}`: requests over a shield limit
/// (`rule`: `address_rate`, `prefix_rate`; `action`: `limited`, `logged`).
pub const SHIELD_DECISIONS: &str = "rempart_shield_decisions";
/// `rempart_config_reloads_total{result}` (`ok`, `refused`).
pub const RELOADS_TOTAL: &str = "rempart_config_reloads";
/// Request rate of the busiest client prefixes right now (gauge, top 32, computed at scrape).
pub const SHIELD_TOP_PREFIX_RATE: &str = "rempart_shield_top_prefix_rate";
/// Requests shed by a pool's admission gate (counter), by priority class.
pub const ADMISSION_SHED: &str = "rempart_admission_shed";
/// Current adaptive concurrency limit of a pool (gauge).
pub const ADMISSION_LIMIT: &str = "rempart_admission_limit";
/// Requests waiting for a pool slot (gauge).
pub const ADMISSION_QUEUED: &str = "rempart_admission_queued";
/// Status-page state of each component (0 operational, 1 maintenance, 2 degraded, 3 partial
/// outage, 4 major outage).
pub const STATUS_COMPONENT_STATE: &str = "rempart_status_component_state";
/// Subscription e-mails and webhook deliveries, by kind and result.
pub const STATUS_DELIVERIES: &str = "rempart_status_deliveries";
/// Answers served from a stale copy because the origin failed.
pub const STALE_SERVED: &str = "rempart_stale_served";
/// Bytes of request bodies the gateway holds now, by store (`memory`, `disk`).
pub const REQUEST_BODY_BYTES: &str = "rempart_request_body_buffered_bytes";
/// Request bodies read whole before forwarding, by store (`memory`, `disk`), or refused
/// because the store was full (`refused`).
pub const REQUEST_BODIES: &str = "rempart_request_bodies_buffered";
/// `rempart_guard_records_total{tenant,route}`: records taken out through guarded routes.
pub const GUARD_RECORDS: &str = "rempart_guard_records";
/// `rempart_guard_pii_items_total{tenant,route,kind}`: personal-data items seen in answers.
pub const GUARD_PII: &str = "rempart_guard_pii_items";
/// `rempart_guard_actions_total{tenant,action}`: budgets crossed (`log`, `alert`, `slow`,
/// `block`, `suspend`), answers refused (`refused_quota`, `refused_suspended`), answers cut
/// (`cut`), unusual activity (`two_places`, `new_fingerprint`).
pub const GUARD_ACTIONS: &str = "rempart_guard_actions";

/// `rempart_watch_level{tenant}`: 0 vert, 1 jaune, 2 orange, 3 rouge.
pub const WATCH_LEVEL: &str = "rempart_watch_level";
/// `rempart_watch_signal{tenant,signal}`: the last second's value of each signal the watch
/// assesses.
pub const WATCH_SIGNAL: &str = "rempart_watch_signal";
/// `rempart_watch_global_level`: the highest level of all tenants and the gateway's own.
pub const WATCH_GLOBAL_LEVEL: &str = "rempart_watch_global_level";
/// `rempart_cluster_degraded`: 1 while a cluster node cannot reach Redis (it defends alone).
pub const CLUSTER_DEGRADED: &str = "rempart_cluster_degraded";
/// `rempart_cluster_nodes`: the cluster's nodes whose heartbeat is current, this one included.
pub const CLUSTER_NODES: &str = "rempart_cluster_nodes";
/// `rempart_cluster_pending_changes`: ban changes made on this node and not yet in Redis.
pub const CLUSTER_PENDING: &str = "rempart_cluster_pending_changes";
/// `rempart_acme_orders_total{tenant,result}`: certificate orders to the ACME authority
/// (`ok`, `failed`).
pub const ACME_ORDERS: &str = "rempart_acme_orders";
/// `rempart_tls_certificate_expiry_timestamp_seconds{tenant}`: end of validity of each
/// tenant's certificate (Unix seconds), as loaded by the running configuration.
pub const TLS_CERTIFICATE_EXPIRY: &str = "rempart_tls_certificate_expiry_timestamp_seconds";

/// Labels of a request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Tenant id (`-` when unknown).
    pub tenant: String,
    /// Route name (`-` when none).
    pub route: String,
    /// `1xx` .. `5xx`.
    pub status_class: &'static str,
}

/// A tenant and an outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantResultLabels {
    /// Tenant id.
    pub tenant: String,
    /// Outcome.
    pub result: &'static str,
}

/// Labels of per-pool metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// Tenant id.
    pub tenant: String,
    /// Pool name.
    pub pool: String,
}

/// Labels of per-server metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    /// Tenant id.
    pub tenant: String,
    /// Pool name.
    pub pool: String,
    /// Server address.
    pub server: String,
}

/// Labels of shield decisions.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShieldLabels {
    /// Tenant id.
    pub tenant: String,
    /// Rule broken.
    pub rule: &'static str,
    /// `limited` or `logged`.
    pub action: &'static str,
}

/// Labels of a heavy-hitter prefix.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopLabels {
    /// Tenant id.
    pub tenant: String,
    /// Network prefix (never a full address: metrics hold no personal data).
    pub prefix: String,
}

/// Where the heavy-hitter collector gets its rows at scrape time (set by the gateway).
pub type TopSource = Box<dyn Fn() -> Vec<(TopLabels, f64)> + Send + Sync>;

/// Emits the current heavy-hitter prefixes at each scrape: only the rows of the moment,
/// so the series do not pile up the way label families would.
struct TopCollector(std::sync::Arc<std::sync::OnceLock<TopSource>>);

impl std::fmt::Debug for TopCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TopCollector")
    }
}

impl prometheus_client::collector::Collector for TopCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let Some(source) = self.0.get() else {
            return Ok(());
        };
        let rows = source();
        let mut metric = encoder.encode_descriptor(
            SHIELD_TOP_PREFIX_RATE,
            "Requests over the last second from the busiest client prefixes (top 32)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (labels, rate) in rows {
            let gauge = prometheus_client::metrics::gauge::ConstGauge::new(rate);
            gauge.encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Labels of a status component.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabels {
    /// Tenant id.
    pub tenant: String,
    /// Component id.
    pub component: String,
}

/// Labels of a delivery count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// `mail` or `webhook`.
    pub kind: &'static str,
    /// `ok` or `failed`.
    pub result: &'static str,
}

/// Labels of a watch signal.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignalLabels {
    /// Tenant id (`*`: the gateway's own).
    pub tenant: String,
    /// The signal (`request_rate`, `new_sources_share`, ...).
    pub signal: &'static str,
}

/// A gauge holding a float.
pub type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Labels with a tenant only.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    /// Tenant id.
    pub tenant: String,
}

/// Status rows read at scrape time: component states and delivery totals.
pub type StatusSource =
    Box<dyn Fn() -> (Vec<(ComponentLabels, i64)>, Vec<(DeliveryLabels, u64)>) + Send + Sync>;

/// Emits the status pages' component states and delivery totals at each scrape.
struct StatusCollector(std::sync::Arc<std::sync::OnceLock<StatusSource>>);

impl std::fmt::Debug for StatusCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StatusCollector")
    }
}

impl prometheus_client::collector::Collector for StatusCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let Some(source) = self.0.get() else {
            return Ok(());
        };
        let (components, deliveries) = source();
        let mut metric = encoder.encode_descriptor(
            STATUS_COMPONENT_STATE,
            "State shown on the status page (0 operational, 1 maintenance, 2 degraded, 3 partial outage, 4 major outage)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (labels, state) in components {
            prometheus_client::metrics::gauge::ConstGauge::new(state)
                .encode(metric.encode_family(&labels)?)?;
        }
        let mut metric = encoder.encode_descriptor(
            STATUS_DELIVERIES,
            "Subscription e-mails and webhook deliveries, by kind and result",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (labels, n) in deliveries {
            prometheus_client::metrics::counter::ConstCounter::new(n)
                .encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Labels of shed requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShedLabels {
    /// Tenant id.
    pub tenant: String,
    /// Pool name.
    pub pool: String,
    /// Priority class of the shed request.
    pub priority: &'static str,
}

/// Labels of personal-data items seen.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PiiLabels {
    /// Tenant id.
    pub tenant: String,
    /// Route name.
    pub route: String,
    /// `nir`, `iban`, `card`, `phone`, `email`, `birth_date`.
    pub kind: &'static str,
}

/// Labels of the guard's actions.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GuardActionLabels {
    /// Tenant id.
    pub tenant: String,
    /// What happened.
    pub action: &'static str,
}

/// Labels of per-route counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Tenant id.
    pub tenant: String,
    /// Route name.
    pub route: String,
}

/// A single `result` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// Outcome.
    pub result: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

/// The registry and every metric family.
pub struct Metrics {
    /// Registry rendered at `/metrics`.
    pub registry: Registry,
    /// Requests by tenant, route and status class.
    pub requests: Family<RequestLabels, Counter>,
    /// Upstream response-head latency.
    pub upstream_latency: Family<PoolLabels, Histogram, fn() -> Histogram>,
    /// Open downstream connections.
    pub connections_active: Gauge,
    /// Downstream connections by result.
    pub connections: Family<ResultLabel, Counter>,
    /// Upstream server health.
    pub upstream_healthy: Family<ServerLabels, Gauge>,
    /// Retries on another server.
    pub upstream_retries: Family<PoolLabels, Counter>,
    /// Config reloads by result.
    pub reloads: Family<ResultLabel, Counter>,
    /// Shield decisions.
    pub shield: Family<ShieldLabels, Counter>,
    /// Shed requests.
    pub admission_shed: Family<ShedLabels, Counter>,
    /// Adaptive limits.
    pub admission_limit: Family<PoolLabels, Gauge>,
    /// Queue lengths.
    pub admission_queued: Family<PoolLabels, Gauge>,
    /// Heavy-hitter rows, provided by the gateway once it exists.
    pub top_source: std::sync::Arc<std::sync::OnceLock<TopSource>>,
    /// Status rows, provided by the gateway once it exists.
    pub status_source: std::sync::Arc<std::sync::OnceLock<StatusSource>>,
    /// Answers served from stale copies, per tenant.
    pub stale_served: Family<TenantLabels, Counter>,
    /// Request-body store gauges and counters.
    pub request_bodies: crate::metrics::BodyStoreMetrics,
    /// Records taken out through guarded routes.
    pub guard_records: Family<RouteLabels, Counter>,
    /// Personal-data items seen in guarded answers.
    pub guard_pii: Family<PiiLabels, Counter>,
    /// The guard's actions.
    pub guard_actions: Family<GuardActionLabels, Counter>,
    /// Each tenant's vigilance level.
    pub watch_level: Family<TenantLabels, Gauge>,
    /// The global vigilance level.
    pub watch_global_level: Gauge,
    /// Cluster mode: Redis out of reach (1) or not (0).
    pub cluster_degraded: Gauge,
    /// Cluster mode: nodes seen.
    pub cluster_nodes: Gauge,
    /// Cluster mode: changes waiting for Redis.
    pub cluster_pending: Gauge,
    /// End of validity of each tenant's certificate.
    pub certificate_expiry: Family<TenantLabels, Gauge>,
    /// ACME orders by tenant and result.
    pub acme_orders: Family<TenantResultLabels, Counter>,
    /// The watch's signals, last second.
    pub watch_signal: Family<SignalLabels, FloatGauge>,
}

/// The request-body store's metrics (the store updates them as it holds and frees bytes).
#[derive(Debug, Clone, Default)]
pub struct BodyStoreMetrics {
    /// Bytes held in memory now.
    pub memory_bytes: Gauge,
    /// Bytes held on disk now.
    pub disk_bytes: Gauge,
    /// Bodies stored in memory.
    pub in_memory: Counter,
    /// Bodies stored on disk.
    pub on_disk: Counter,
    /// Bodies refused because the store was full.
    pub refused: Counter,
}

/// A single `store` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabel {
    /// `memory`, `disk` or `refused`.
    pub store: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            REQUESTS_TOTAL,
            "Requests answered, by tenant, route and status class",
            requests.clone(),
        );
        let upstream_latency =
            Family::<PoolLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        registry.register(
            UPSTREAM_RESPONSE_SECONDS,
            "Time from sending upstream to the response head",
            upstream_latency.clone(),
        );
        let connections_active = Gauge::default();
        registry.register(
            CONNECTIONS_ACTIVE,
            "Open downstream connections",
            connections_active.clone(),
        );
        let connections = Family::<ResultLabel, Counter>::default();
        registry.register(
            CONNECTIONS_TOTAL,
            "Downstream connections by result",
            connections.clone(),
        );
        let upstream_healthy = Family::<ServerLabels, Gauge>::default();
        registry.register(
            UPSTREAM_HEALTHY,
            "1 when the upstream server is in rotation",
            upstream_healthy.clone(),
        );
        let upstream_retries = Family::<PoolLabels, Counter>::default();
        registry.register(
            UPSTREAM_RETRIES,
            "Idempotent requests retried on another server",
            upstream_retries.clone(),
        );
        let reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            RELOADS_TOTAL,
            "Configuration reloads by result",
            reloads.clone(),
        );
        let shield = Family::<ShieldLabels, Counter>::default();
        registry.register(
            SHIELD_DECISIONS,
            "Requests over a shield limit, by rule and action",
            shield.clone(),
        );
        let admission_shed = Family::<ShedLabels, Counter>::default();
        registry.register(
            ADMISSION_SHED,
            "Requests shed by a pool's admission gate (503), by priority class",
            admission_shed.clone(),
        );
        let admission_limit = Family::<PoolLabels, Gauge>::default();
        registry.register(
            ADMISSION_LIMIT,
            "Current adaptive concurrency limit towards a pool",
            admission_limit.clone(),
        );
        let admission_queued = Family::<PoolLabels, Gauge>::default();
        registry.register(
            ADMISSION_QUEUED,
            "Requests waiting for a slot towards a pool",
            admission_queued.clone(),
        );
        let top_source = std::sync::Arc::new(std::sync::OnceLock::new());
        registry.register_collector(Box::new(TopCollector(top_source.clone())));
        let status_source = std::sync::Arc::new(std::sync::OnceLock::new());
        registry.register_collector(Box::new(StatusCollector(status_source.clone())));
        let stale_served = Family::<TenantLabels, Counter>::default();
        registry.register(
            STALE_SERVED,
            "Answers served from a stale copy because the origin failed",
            stale_served.clone(),
        );
        let bytes = Family::<StoreLabel, Gauge>::default();
        let bodies = Family::<StoreLabel, Counter>::default();
        let gauge = |store| bytes.get_or_create(&StoreLabel { store }).clone();
        let counter = |store| bodies.get_or_create(&StoreLabel { store }).clone();
        let request_bodies = BodyStoreMetrics {
            memory_bytes: gauge("memory"),
            disk_bytes: gauge("disk"),
            in_memory: counter("memory"),
            on_disk: counter("disk"),
            refused: counter("refused"),
        };
        registry.register(
            REQUEST_BODY_BYTES,
            "Bytes of request bodies the gateway holds now, by store",
            bytes,
        );
        registry.register(
            REQUEST_BODIES,
            "Request bodies read whole before forwarding, by store, or refused (store full)",
            bodies,
        );
        let guard_records = Family::<RouteLabels, Counter>::default();
        registry.register(
            GUARD_RECORDS,
            "Records taken out through guarded routes",
            guard_records.clone(),
        );
        let guard_pii = Family::<PiiLabels, Counter>::default();
        registry.register(
            GUARD_PII,
            "Personal-data items seen in the answers of guarded routes, by kind",
            guard_pii.clone(),
        );
        let guard_actions = Family::<GuardActionLabels, Counter>::default();
        registry.register(
            GUARD_ACTIONS,
            "Data-guard actions: budgets crossed, answers refused or cut, unusual activity",
            guard_actions.clone(),
        );
        let watch_level = Family::<TenantLabels, Gauge>::default();
        registry.register(
            WATCH_LEVEL,
            "Vigilance level of each tenant: 0 vert, 1 jaune, 2 orange, 3 rouge",
            watch_level.clone(),
        );
        let watch_global_level = Gauge::default();
        registry.register(
            WATCH_GLOBAL_LEVEL,
            "Global vigilance level (the highest of the tenants' and the gateway's own): 0 vert, 1 jaune, 2 orange, 3 rouge",
            watch_global_level.clone(),
        );
        let cluster_degraded = Gauge::default();
        registry.register(
            CLUSTER_DEGRADED,
            "Cluster mode: 1 while this node cannot reach Redis and defends alone",
            cluster_degraded.clone(),
        );
        let cluster_nodes = Gauge::default();
        registry.register(
            CLUSTER_NODES,
            "Cluster mode: nodes whose heartbeat is current, this one included",
            cluster_nodes.clone(),
        );
        let cluster_pending = Gauge::default();
        registry.register(
            CLUSTER_PENDING,
            "Cluster mode: ban changes made on this node and not yet written to Redis",
            cluster_pending.clone(),
        );
        let watch_signal = Family::<SignalLabels, FloatGauge>::default();
        registry.register(
            WATCH_SIGNAL,
            "The last second's value of each signal the watch assesses, per tenant",
            watch_signal.clone(),
        );
        let certificate_expiry = Family::<TenantLabels, Gauge>::default();
        registry.register(
            TLS_CERTIFICATE_EXPIRY,
            "End of validity of each tenant's certificate, Unix seconds (the configuration running now)",
            certificate_expiry.clone(),
        );
        let acme_orders = Family::<TenantResultLabels, Counter>::default();
        registry.register(
            ACME_ORDERS,
            "Certificate orders to the ACME authority, by tenant and result (ok, failed)",
            acme_orders.clone(),
        );
        Self {
            acme_orders,
            certificate_expiry,
            watch_level,
            watch_global_level,
            cluster_degraded,
            cluster_nodes,
            cluster_pending,
            watch_signal,
            guard_records,
            guard_pii,
            guard_actions,
            request_bodies,
            status_source,
            stale_served,
            top_source,
            admission_shed,
            admission_limit,
            admission_queued,
            shield,
            registry,
            requests,
            upstream_latency,
            connections_active,
            connections,
            upstream_healthy,
            upstream_retries,
            reloads,
        }
    }
}

impl Metrics {
    /// Renders the OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Counts a connection outcome.
    pub fn connection(&self, result: &'static str) {
        self.connections
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Shows the end of validity (Unix seconds) of each tenant's certificate, and forgets
    /// the tenants that no longer have one.
    pub fn set_certificates<'a>(&self, expiries: impl IntoIterator<Item = (&'a str, u64)>) {
        self.certificate_expiry.clear();
        for (tenant, not_after) in expiries {
            self.certificate_expiry
                .get_or_create(&TenantLabels {
                    tenant: tenant.to_owned(),
                })
                .set(i64::try_from(not_after).unwrap_or(i64::MAX));
        }
    }

    /// Per-route counters, one per status class, resolved once.
    pub fn route_counters(&self, tenant: &str, route: &str) -> [Counter; 5] {
        ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|status_class| {
            self.requests
                .get_or_create(&RequestLabels {
                    tenant: tenant.to_owned(),
                    route: route.to_owned(),
                    status_class,
                })
                .clone()
        })
    }
}

impl Metrics {
    /// Shield counters of a tenant: address limited, address logged, prefix limited, prefix logged.
    pub fn shield_counters(&self, tenant: &str) -> [Counter; SHIELD_COUNTERS] {
        [
            ("address_rate", "limited"),
            ("address_rate", "logged"),
            ("prefix_rate", "limited"),
            ("prefix_rate", "logged"),
            ("pass_rate", "limited"),
            ("challenge", "issued"),
            ("challenge", "passed"),
            ("challenge", "refused"),
            ("fingerprint_rate", "limited"),
            ("fingerprint_rate", "logged"),
            ("local_rate", "limited"),
            ("address_rate", "shared"),
            ("prefix_rate", "shared"),
            ("address_rate", "challenged"),
            ("prefix_rate", "challenged"),
            ("trusted_network", "allowed"),
            ("trusted_network", "pass_granted"),
        ]
        .map(|(rule, action)| {
            self.shield
                .get_or_create(&ShieldLabels {
                    tenant: tenant.to_owned(),
                    rule,
                    action,
                })
                .clone()
        })
    }
}

/// Number of per-tenant shield counters (see `Metrics::shield_counters` for their order).
pub const SHIELD_COUNTERS: usize = 17;
/// Index of the counter of verified requests let through above the single client's
/// per-address limit on a shared address (+1: per-prefix).
pub const SHIELD_SHARED: usize = 11;
/// Index of the counter of browsers without a pass over the per-address limit, sent to the
/// challenge (+1: per-prefix).
pub const SHIELD_CHALLENGED: usize = 13;
/// Index of the counter of requests from a tenant's trusted networks.
pub const SHIELD_TRUSTED: usize = 15;
/// Index of the counter of passes handed to trusted networks' browsers.
pub const SHIELD_TRUSTED_PASS: usize = 16;
/// Index of the local-pages rate counter (`/.rempart/`, limited).
pub const SHIELD_LOCAL_LIMITED: usize = 10;
/// Index of the fingerprint-rate counter (limited; +1 for logged).
pub const SHIELD_FINGERPRINT_LIMITED: usize = 8;
/// Index of the pass-rate counter in `shield_counters`.
pub const SHIELD_PASS_LIMITED: usize = 4;
/// Index of the challenges-issued counter.
pub const SHIELD_CHALLENGE_ISSUED: usize = 5;
/// Index of the challenges-passed counter.
pub const SHIELD_CHALLENGE_PASSED: usize = 6;
/// Index of the challenges-refused counter.
pub const SHIELD_CHALLENGE_REFUSED: usize = 7;

/// Index of a status code's class in `route_counters`.
pub fn status_class_index(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}
