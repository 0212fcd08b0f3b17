//! What level a tenant's signals call for, and why: each second's observation against the
//! tenant's baseline, every rule that fires giving the level it asks for and its evidence (the
//! signal, its value, what is usual, the threshold). The highest level wins. Pure.

use super::baseline::Baseline;
use super::level::Level;

/// One second of a tenant's signals (the pipeline's sampler fills it).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Observation {
    /// Requests per second, averaged over the last 10 seconds.
    pub requests_per_s: f64,
    /// Share of the requests from client prefixes not seen in the last day (0 to 1).
    pub new_sources_share: f64,
    /// Share of the origin's answers that were 5xx or failed (0 to 1).
    pub origin_errors_share: f64,
    /// Requests shed by the admission gate per second.
    pub shed_per_s: f64,
    /// Failed logins per second on routes marked as login.
    pub login_failures_per_s: f64,
    /// Connections closed by the gateway per second (slowloris, resets, header timeouts).
    pub conn_trips_per_s: f64,
    /// Data-guard budgets crossed (alert and above) or answers cut, this second.
    pub guard_breaches: u32,
    /// Pools with no server available (health checks failing, or all ejected).
    pub pools_down: u32,
    /// Pools with some servers out of rotation.
    pub pools_degraded: u32,
    /// Answers from the origin this second.
    pub origin_answers: u32,
    /// Their mean time to the response head, ms.
    pub latency_ms: f64,
    /// The usual latency for this hour of the week, once learnt.
    pub usual_latency_ms: Option<f64>,
    /// Challenge pages issued per second.
    pub challenges_issued_per_s: f64,
    /// Challenge answers accepted per second.
    pub challenges_passed_per_s: f64,
    /// Share of this second's requests the gateway refused itself (rate limits, bans,
    /// malformed requests), 0 to 1.
    pub refused_share: f64,
    /// Share of this second's requests for no route or no page (404: scanners), 0 to 1.
    pub not_found_share: f64,
    /// Share of this second's requests from the most common client fingerprint (JA4 and
    /// HTTP), 0 to 1.
    pub fingerprint_share: f64,
    /// That fingerprint's usual share, once the mix is learnt.
    pub fingerprint_usual_share: Option<f64>,
    /// Requests the mix was counted over this second.
    pub fingerprint_requests: u32,
}

/// How sensitive the rules are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Request rate over the usual one for jaune, orange, rouge.
    pub rate_ratio: [f64; 3],
    /// Rates under this many requests per second are never unusual (a quiet tenant).
    pub min_rate: f64,
    /// Failed logins per second for orange (credential stuffing).
    pub login_failures: f64,
    /// Connection trips per second for orange.
    pub conn_trips: f64,
    /// Samples (seconds) the baseline needs before the request rate may call for more
    /// than jaune: a fresh install learns before it acts on rates alone.
    pub learning_samples: u64,
    /// Origin latency over its usual value for jaune and orange (never under 200 ms and
    /// 1 s).
    pub latency_ratio: [f64; 2],
    /// Challenges issued per second, most of them unsolved, for jaune.
    pub unsolved_challenges: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            rate_ratio: [3.0, 8.0, 20.0],
            min_rate: 5.0,
            login_failures: 2.0,
            conn_trips: 50.0,
            learning_samples: 0,
            latency_ratio: [4.0, 10.0],
            unsolved_challenges: 20.0,
        }
    }
}

/// A rule that fired.
#[derive(Debug, Clone, PartialEq)]
pub struct Reason {
    /// The signal.
    pub signal: &'static str,
    /// The route it was seen on, for signals per route.
    pub route: Option<String>,
    /// Its value now.
    pub value: f64,
    /// What is usual (or the threshold's base).
    pub usual: f64,
    /// The level it asks for.
    pub level: Level,
}

/// What the signals call for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Assessment {
    /// The highest level a rule asks for.
    pub wanted: Level,
    /// Every rule that fired.
    pub reasons: Vec<Reason>,
}

impl Assessment {
    fn add(&mut self, signal: &'static str, value: f64, usual: f64, level: Level) {
        self.wanted = self.wanted.max(level);
        self.reasons.push(Reason {
            signal,
            route: None,
            value,
            usual,
            level,
        });
    }
}

/// One route's request rate (10 s mean) against its own usual value for the hour: a route
/// busy far beyond its habit (a search flooded with cache-busting queries while the rest of
/// the site is calm) is jaune at `rate_ratio[1]` times its usual rate, orange when most of the
/// tenant's traffic also comes from new sources. Never more: a route's traffic is spiky (the
/// registration form on registration day), the tenant-wide rules judge the whole. `None`
/// while the route's baseline knows nothing yet.
pub fn assess_route(
    route: &str,
    rate: f64,
    baseline: &Baseline,
    hour: usize,
    new_sources_share: f64,
    t: &Thresholds,
) -> Option<Reason> {
    let usual = baseline.expected(hour)?.max(t.min_rate);
    if baseline.samples() < t.learning_samples || rate < usual * t.rate_ratio[1] {
        return None;
    }
    Some(Reason {
        signal: "route_request_rate",
        route: Some(route.to_owned()),
        value: rate,
        usual,
        level: if new_sources_share >= 0.8 {
            Level::Orange
        } else {
            Level::Jaune
        },
    })
}

/// Assesses `obs` against `baseline` (the usual request rate) in hour `hour` of the week.
pub fn assess(obs: &Observation, baseline: &Baseline, hour: usize, t: &Thresholds) -> Assessment {
    let mut a = Assessment::default();
    // The request rate against its usual value for this hour of the week.
    let usual = baseline.expected(hour).unwrap_or(0.0).max(t.min_rate);
    let ratio = obs.requests_per_s / usual;
    let by_rate = if ratio >= t.rate_ratio[2] {
        Level::Rouge
    } else if ratio >= t.rate_ratio[1] {
        Level::Orange
    } else if ratio >= t.rate_ratio[0] {
        Level::Jaune
    } else {
        Level::Vert
    };
    // A surge of new sources is what a botnet looks like; residents mostly come back.
    let by_rate =
        if by_rate >= Level::Jaune && obs.new_sources_share >= 0.8 && by_rate < Level::Rouge {
            Level::ALL[by_rate as usize + 1]
        } else {
            by_rate
        };
    if by_rate > Level::Vert {
        if baseline.samples() < t.learning_samples {
            // Still learning what is usual: the rate alone says at most jaune.
            a.add(
                "request_rate_learning",
                obs.requests_per_s,
                usual,
                Level::Jaune,
            );
        } else {
            a.add("request_rate", obs.requests_per_s, usual, by_rate);
        }
    }
    // The origin in distress: shedding, or failing.
    if obs.shed_per_s >= 1.0 {
        a.add("shed", obs.shed_per_s, 0.0, Level::Orange);
    }
    if obs.origin_errors_share >= 0.5 && obs.requests_per_s >= t.min_rate {
        a.add("origin_errors", obs.origin_errors_share, 0.5, Level::Orange);
    } else if obs.origin_errors_share >= 0.1 && obs.requests_per_s >= t.min_rate {
        a.add("origin_errors", obs.origin_errors_share, 0.1, Level::Jaune);
    }
    if obs.login_failures_per_s >= t.login_failures {
        a.add(
            "login_failures",
            obs.login_failures_per_s,
            t.login_failures,
            Level::Orange,
        );
    }
    if obs.conn_trips_per_s >= t.conn_trips {
        a.add(
            "connection_trips",
            obs.conn_trips_per_s,
            t.conn_trips,
            Level::Orange,
        );
    }
    if obs.guard_breaches > 0 {
        a.add(
            "guard_breaches",
            f64::from(obs.guard_breaches),
            0.0,
            Level::Orange,
        );
    }
    // Health: a pool with no server left is a service down; some servers out, a warning.
    if obs.pools_down > 0 {
        a.add("origin_down", f64::from(obs.pools_down), 0.0, Level::Orange);
    } else if obs.pools_degraded > 0 {
        a.add(
            "origin_servers_out",
            f64::from(obs.pools_degraded),
            0.0,
            Level::Jaune,
        );
    }
    // The origin slowing down against its usual latency (enough answers to mean something).
    if let Some(usual) = obs.usual_latency_ms.filter(|_| obs.origin_answers >= 5) {
        let [jaune, orange] = t.latency_ratio;
        if obs.latency_ms >= (usual * orange).max(1_000.0) {
            a.add("origin_latency_ms", obs.latency_ms, usual, Level::Orange);
        } else if obs.latency_ms >= (usual * jaune).max(200.0) {
            a.add("origin_latency_ms", obs.latency_ms, usual, Level::Jaune);
        }
    }
    // The shield pushing back, or a scanner walking the site: most requests refused.
    if obs.requests_per_s >= t.min_rate {
        if obs.refused_share >= 0.5 {
            a.add("refused_share", obs.refused_share, 0.5, Level::Jaune);
        }
        if obs.not_found_share >= 0.5 {
            a.add("not_found_share", obs.not_found_share, 0.5, Level::Jaune);
        }
    }
    // One client fingerprint jumping from nothing to most of the traffic: one tool on many
    // addresses.
    // (At least 30 requests in the second: on a quiet night three requests from one phone
    // are not a mix.)
    if let Some(usual) = obs.fingerprint_usual_share {
        if obs.fingerprint_requests >= 30 && obs.fingerprint_share >= 0.5 && usual < 0.02 {
            a.add(
                "fingerprint_surge",
                obs.fingerprint_share,
                usual,
                Level::Orange,
            );
        }
    }
    // Challenges issued in numbers and hardly ever solved: bots meeting the proof of work.
    if obs.challenges_issued_per_s >= t.unsolved_challenges
        && obs.challenges_passed_per_s < obs.challenges_issued_per_s * 0.1
    {
        a.add(
            "challenges_unsolved",
            obs.challenges_issued_per_s,
            t.unsolved_challenges,
            Level::Jaune,
        );
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tenant whose Monday 9:00 is busy (40/s) and whose nights are quiet (2/s).
    fn learnt() -> Baseline {
        let mut b = Baseline::default();
        for hour in 0..super::super::baseline::HOURS {
            let busy = hour / 24 < 5 && (9..17).contains(&(hour % 24));
            for _ in 0..700 {
                b.learn(hour, if busy { 40.0 } else { 2.0 });
            }
        }
        b
    }

    fn at(rate: f64) -> Observation {
        Observation {
            requests_per_s: rate,
            new_sources_share: 0.1,
            ..Observation::default()
        }
    }

    #[test]
    fn monday_morning_is_not_an_attack_and_a_legitimate_surge_stays_yellow() {
        let b = learnt();
        let t = Thresholds::default();
        let monday_9 = 9;
        assert_eq!(assess(&at(45.0), &b, monday_9, &t).wanted, Level::Vert);
        // School registrations open: five times the usual, from residents who come back.
        let surge = assess(&at(200.0), &b, monday_9, &t);
        assert_eq!(surge.wanted, Level::Jaune, "{surge:?}");
        // The same 45/s at 3:00 on a Sunday is unusual.
        assert!(assess(&at(45.0), &b, 6 * 24 + 3, &t).wanted >= Level::Orange);
    }

    #[test]
    fn a_flood_from_new_sources_is_red_and_says_why() {
        let b = learnt();
        let t = Thresholds::default();
        let flood = Observation {
            requests_per_s: 5_000.0,
            new_sources_share: 0.97,
            shed_per_s: 300.0,
            ..Observation::default()
        };
        let a = assess(&flood, &b, 9, &t);
        assert_eq!(a.wanted, Level::Rouge);
        let rate = a
            .reasons
            .iter()
            .find(|r| r.signal == "request_rate")
            .unwrap();
        assert_eq!((rate.value, rate.usual), (5_000.0, 40.0));
        assert!(a.reasons.iter().any(|r| r.signal == "shed"));
        // Low and slow: three times the usual from new sources is orange, not yellow.
        let slow = Observation {
            requests_per_s: 130.0,
            new_sources_share: 0.9,
            ..Observation::default()
        };
        assert_eq!(assess(&slow, &b, 9, &t).wanted, Level::Orange);
    }

    #[test]
    fn a_failing_or_slowing_origin_and_unsolved_challenges_are_told() {
        let b = Baseline::default();
        let t = Thresholds::default();
        let level = |obs: Observation| assess(&obs, &b, 0, &t).wanted;
        assert_eq!(
            level(Observation {
                pools_down: 1,
                ..Observation::default()
            }),
            Level::Orange
        );
        assert_eq!(
            level(Observation {
                pools_degraded: 1,
                ..Observation::default()
            }),
            Level::Jaune
        );
        let slow = |ms: f64, answers: u32| Observation {
            origin_answers: answers,
            latency_ms: ms,
            usual_latency_ms: Some(40.0),
            ..Observation::default()
        };
        assert_eq!(
            level(slow(150.0, 50)),
            Level::Vert,
            "under 200 ms is never slow"
        );
        assert_eq!(level(slow(250.0, 50)), Level::Jaune);
        assert_eq!(level(slow(1_200.0, 50)), Level::Orange);
        assert_eq!(
            level(slow(1_200.0, 2)),
            Level::Vert,
            "two slow answers mean little"
        );
        assert_eq!(
            level(Observation {
                latency_ms: 5_000.0,
                origin_answers: 50,
                ..Observation::default()
            }),
            Level::Vert,
            "no usual latency learnt yet"
        );
        let challenged = |issued: f64, passed: f64| Observation {
            challenges_issued_per_s: issued,
            challenges_passed_per_s: passed,
            ..Observation::default()
        };
        assert_eq!(level(challenged(200.0, 3.0)), Level::Jaune);
        assert_eq!(
            level(challenged(200.0, 150.0)),
            Level::Vert,
            "residents solving them"
        );
        assert_eq!(level(challenged(5.0, 0.0)), Level::Vert);
        let refused = |rate: f64, refused: f64, not_found: f64| Observation {
            requests_per_s: rate,
            refused_share: refused,
            not_found_share: not_found,
            ..Observation::default()
        };
        assert_eq!(level(refused(6.0, 0.8, 0.0)), Level::Jaune);
        assert_eq!(level(refused(6.0, 0.0, 0.7)), Level::Jaune);
        assert_eq!(level(refused(6.0, 0.2, 0.1)), Level::Vert);
        assert_eq!(level(refused(2.0, 1.0, 1.0)), Level::Vert, "a quiet tenant");
        let mix = |share: f64, usual: Option<f64>| Observation {
            requests_per_s: 6.0,
            fingerprint_share: share,
            fingerprint_usual_share: usual,
            fingerprint_requests: 40,
            ..Observation::default()
        };
        assert_eq!(
            level(mix(0.9, Some(0.01))),
            Level::Orange,
            "one tool from nothing"
        );
        assert_eq!(level(mix(0.6, Some(0.4))), Level::Vert, "the usual browser");
        assert_eq!(
            level(mix(0.3, Some(0.0))),
            Level::Vert,
            "not most of the traffic"
        );
        assert_eq!(level(mix(0.9, None)), Level::Vert, "the mix not learnt yet");
        let few = Observation {
            fingerprint_requests: 5,
            ..mix(1.0, Some(0.0))
        };
        assert_eq!(level(few), Level::Vert, "five requests are not a mix");
    }

    #[test]
    fn a_route_far_above_its_habit_is_jaune_or_orange_from_new_sources() {
        let t = Thresholds::default();
        let mut b = Baseline::default();
        assert_eq!(
            assess_route("/recherche", 500.0, &b, 9, 0.0, &t),
            None,
            "nothing learnt"
        );
        for _ in 0..700 {
            b.learn(9, 6.0);
        }
        assert_eq!(
            assess_route("/recherche", 30.0, &b, 9, 0.0, &t),
            None,
            "5x: a busy hour"
        );
        let r = assess_route("/recherche", 300.0, &b, 9, 0.1, &t).unwrap();
        assert_eq!(
            (r.level, r.route.as_deref()),
            (Level::Jaune, Some("/recherche"))
        );
        let r = assess_route("/recherche", 300.0, &b, 9, 0.95, &t).unwrap();
        assert_eq!(r.level, Level::Orange);
        let learning = Thresholds {
            learning_samples: 3_600,
            ..t
        };
        assert_eq!(
            assess_route("/recherche", 300.0, &b, 9, 0.95, &learning),
            None
        );
    }

    #[test]
    fn while_learning_the_rate_alone_says_at_most_jaune() {
        let t = Thresholds {
            learning_samples: 3_600,
            ..Thresholds::default()
        };
        let flood = Observation {
            requests_per_s: 5_000.0,
            new_sources_share: 0.97,
            ..Observation::default()
        };
        let a = assess(&flood, &Baseline::default(), 9, &t);
        assert_eq!(a.wanted, Level::Jaune);
        assert_eq!(a.reasons[0].signal, "request_rate_learning");
        // Distress still counts in full.
        let shedding = Observation {
            shed_per_s: 50.0,
            ..flood
        };
        assert_eq!(
            assess(&shedding, &Baseline::default(), 9, &t).wanted,
            Level::Orange
        );
        assert_eq!(assess(&flood, &learnt(), 9, &t).wanted, Level::Rouge);
    }

    #[test]
    fn stuffing_breaches_and_distress_are_orange_and_a_quiet_tenant_stays_green() {
        let b = Baseline::default();
        let t = Thresholds::default();
        let calm = Observation {
            requests_per_s: 3.0,
            origin_errors_share: 1.0,
            ..Observation::default()
        };
        assert_eq!(
            assess(&calm, &b, 0, &t).wanted,
            Level::Vert,
            "a few failing requests on a quiet night"
        );
        for obs in [
            Observation {
                login_failures_per_s: 5.0,
                ..Observation::default()
            },
            Observation {
                guard_breaches: 1,
                ..Observation::default()
            },
            Observation {
                requests_per_s: 10.0,
                origin_errors_share: 0.9,
                ..Observation::default()
            },
            Observation {
                conn_trips_per_s: 500.0,
                ..Observation::default()
            },
        ] {
            assert_eq!(assess(&obs, &b, 0, &t).wanted, Level::Orange, "{obs:?}");
        }
    }

    fn observation() -> impl proptest::strategy::Strategy<Value = Observation> {
        use proptest::prelude::*;
        (
            (0.0..10_000.0f64, 0.0..=1.0f64, 0.0..=1.0f64, 0.0..500.0f64),
            (0.0..50.0f64, 0.0..500.0f64, 0u32..5, 0u32..3, 0u32..3),
            (
                0u32..200,
                0.0..5_000.0f64,
                proptest::option::of(1.0..500.0f64),
            ),
            (0.0..300.0f64, 0.0..300.0f64, 0.0..=1.0f64, 0.0..=1.0f64),
            (0.0..=1.0f64, proptest::option::of(0.0..=1.0f64), 0u32..500),
        )
            .prop_map(|(a, b, c, d, e)| Observation {
                requests_per_s: a.0,
                new_sources_share: a.1,
                origin_errors_share: a.2,
                shed_per_s: a.3,
                login_failures_per_s: b.0,
                conn_trips_per_s: b.1,
                guard_breaches: b.2,
                pools_down: b.3,
                pools_degraded: b.4,
                origin_answers: c.0,
                latency_ms: c.1,
                usual_latency_ms: c.2,
                challenges_issued_per_s: d.0,
                challenges_passed_per_s: d.1,
                refused_share: d.2,
                not_found_share: d.3,
                fingerprint_share: e.0,
                fingerprint_usual_share: e.1,
                fingerprint_requests: e.2,
            })
    }

    proptest::proptest! {
        /// Whatever the signals: the level called for is the highest of the rules that
        /// fired, each with its evidence; no rule fires on a calm second; more distress
        /// (shedding, failed logins, connection trips, guard breaches, a pool down) never
        /// lowers it, nor does a higher request rate.
        #[test]
        fn the_level_is_the_highest_reason_and_more_distress_never_lowers_it(
            obs in observation(),
            extra in 0.0..1_000.0f64,
        ) {
            let b = learnt();
            let t = Thresholds::default();
            let a = assess(&obs, &b, 9, &t);
            let highest = a.reasons.iter().map(|r| r.level).max().unwrap_or(Level::Vert);
            proptest::prop_assert_eq!(a.wanted, highest);
            proptest::prop_assert!(a.reasons.iter().all(|r| r.level > Level::Vert));
            let worse = Observation {
                shed_per_s: obs.shed_per_s + extra,
                login_failures_per_s: obs.login_failures_per_s + extra,
                conn_trips_per_s: obs.conn_trips_per_s + extra,
                guard_breaches: obs.guard_breaches + 1,
                pools_down: obs.pools_down + 1,
                ..obs
            };
            proptest::prop_assert!(assess(&worse, &b, 9, &t).wanted >= a.wanted);
            proptest::prop_assert!(assess(&worse, &b, 9, &t).wanted >= Level::Orange);
            proptest::prop_assert_eq!(assess(&Observation::default(), &b, 9, &t).wanted, Level::Vert);
            // Nor does a higher request rate.
            let faster = Observation {
                requests_per_s: obs.requests_per_s + extra,
                ..obs
            };
            proptest::prop_assert!(assess(&faster, &b, 9, &t).wanted >= a.wanted);
        }
    }
}
