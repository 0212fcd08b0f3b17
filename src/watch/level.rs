//! Vigilance levels and the machine that moves a tenant between them. Detectors say which
//! level the signals call for now (`wanted`); the machine raises the level at once, and lowers
//! it one step at a time, at most one step per `step_ms`, so that it reaches what the signals
//! call for when they have stayed lower for the quiet period: from rouge to vert with a quiet
//! period of 5 minutes, orange after 3 calm minutes, jaune after 4, vert after 5. A flood that
//! pauses for a few seconds does not send the level down and up again. An operator may set a level until an expiry; when it expires the level
//! falls from there like any other (never straight back to green).

pub use crate::common::Level;

/// How the machine moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// How long the signals must stay below the level before it is back at what they call
    /// for, ms (the steps down before the last come one `step_ms` apart before it).
    pub quiet_ms: u64,
    /// The least time between two steps down, ms.
    pub step_ms: u64,
}

impl Default for Pace {
    fn default() -> Self {
        Self {
            quiet_ms: 5 * 60_000,
            step_ms: 60_000,
        }
    }
}

/// Why the level changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The signals called for a higher level.
    Raised,
    /// The signals stayed lower long enough.
    Calmed,
    /// An operator set it (with their reason).
    Operator(String),
    /// The operator's level expired.
    OverrideExpired,
}

/// A change of level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The level before.
    pub from: Level,
    /// The level now.
    pub to: Level,
    /// Why.
    pub cause: Cause,
    /// When, ms.
    pub at_ms: u64,
}

/// An operator's level.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Override {
    level: Level,
    until_ms: u64,
}

/// One tenant's (or the gateway's) level over time.
#[derive(Debug, Clone)]
pub struct Machine {
    pace: Pace,
    level: Level,
    /// Since when the signals have called for less than the level, continuously.
    calm_since_ms: Option<u64>,
    /// When the level last changed.
    changed_ms: u64,
    overridden: Option<Override>,
}

impl Machine {
    /// A machine at green, moving at `pace`.
    pub fn new(pace: Pace) -> Self {
        Self {
            pace,
            level: Level::Vert,
            calm_since_ms: None,
            changed_ms: 0,
            overridden: None,
        }
    }

    /// Takes up `level` again at `now_ms` without a change (a restart in the middle of an
    /// attack: the level kept by the incident, falling like after any attack once calm).
    pub fn resume(&mut self, level: Level, now_ms: u64) {
        self.level = level;
        self.changed_ms = now_ms;
        self.calm_since_ms = None;
    }

    /// Takes up an operator's `level` until `until_ms` again without a change (handed over
    /// by the process an upgrade replaced: the operator's decision outlives the binary).
    pub fn resume_override(&mut self, level: Level, until_ms: u64, now_ms: u64) {
        self.resume(level, now_ms);
        self.overridden = Some(Override { level, until_ms });
    }

    /// The level now.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The operator's level and its expiry, when one is set.
    pub fn override_until(&self) -> Option<(Level, u64)> {
        self.overridden.as_ref().map(|o| (o.level, o.until_ms))
    }

    fn change(&mut self, to: Level, cause: Cause, now_ms: u64) -> Option<Change> {
        if to == self.level {
            return None;
        }
        let change = Change {
            from: self.level,
            to,
            cause,
            at_ms: now_ms,
        };
        self.level = to;
        self.changed_ms = now_ms;
        self.calm_since_ms = None;
        Some(change)
    }

    /// An operator sets `level` until `until_ms` (the signals are ignored meanwhile).
    pub fn set_override(
        &mut self,
        level: Level,
        until_ms: u64,
        reason: &str,
        now_ms: u64,
    ) -> Option<Change> {
        self.overridden = Some(Override { level, until_ms });
        self.change(level, Cause::Operator(reason.to_owned()), now_ms)
            .or_else(|| {
                // Same level: the quiet period starts again from the operator's decision.
                self.calm_since_ms = None;
                None
            })
    }

    /// Lifts the operator's level: the signals decide again from the next `observe`, and the
    /// level falls from where it is like after any attack.
    pub fn clear_override(&mut self) {
        self.overridden = None;
    }

    /// What the signals call for at `now_ms`; the change it makes, if any.
    pub fn observe(&mut self, wanted: Level, now_ms: u64) -> Option<Change> {
        if let Some(o) = &self.overridden {
            if now_ms < o.until_ms {
                return None;
            }
            self.overridden = None;
            if wanted > self.level {
                return self.change(wanted, Cause::OverrideExpired, now_ms);
            }
            // From the operator's level, down like after any attack.
            self.calm_since_ms = (wanted < self.level).then_some(now_ms);
            return None;
        }
        if wanted > self.level {
            return self.change(wanted, Cause::Raised, now_ms);
        }
        if wanted == self.level {
            self.calm_since_ms = None;
            return None;
        }
        let calm_since = *self.calm_since_ms.get_or_insert(now_ms);
        // The steps still to go, the last at the end of the quiet period and the others one
        // `step_ms` apart before it (never sooner than a step after the signals calmed).
        let steps = (self.level as u64).saturating_sub(wanted as u64);
        let needed = self
            .pace
            .quiet_ms
            .saturating_sub(steps.saturating_sub(1) * self.pace.step_ms)
            .max(self.pace.quiet_ms.min(self.pace.step_ms));
        let quiet = now_ms.saturating_sub(calm_since) >= needed;
        let spaced = now_ms.saturating_sub(self.changed_ms) >= self.pace.step_ms;
        if quiet && spaced {
            let to = self.level.lower();
            let change = self.change(to, Cause::Calmed, now_ms);
            // Still calm: the next step needs only the spacing, not another quiet period.
            if to > wanted {
                self.calm_since_ms = Some(calm_since);
            }
            return change;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000;
    const MIN: u64 = 60_000;

    #[test]
    fn raised_at_once_lowered_step_by_step_after_the_quiet_period() {
        let mut m = Machine::new(Pace::default());
        assert_eq!(m.observe(Level::Jaune, 0).unwrap().to, Level::Jaune);
        let up = m.observe(Level::Rouge, S).unwrap();
        assert_eq!(
            (up.from, up.to, up.cause),
            (Level::Jaune, Level::Rouge, Cause::Raised)
        );
        // The flood pauses for a minute: nothing moves.
        for t in (2 * S..62 * S).step_by(1000) {
            assert_eq!(m.observe(Level::Vert, t), None);
        }
        assert_eq!(m.observe(Level::Rouge, 62 * S), None);
        // Then it ends: one step a minute, vert when the signals have been calm for five.
        let end = 63 * S;
        let mut changes = Vec::new();
        for t in (end..end + 20 * MIN).step_by(1000) {
            if let Some(c) = m.observe(Level::Vert, t) {
                changes.push((c.to, c.at_ms - end));
            }
        }
        assert_eq!(
            changes,
            [
                (Level::Orange, 3 * MIN),
                (Level::Jaune, 4 * MIN),
                (Level::Vert, 5 * MIN)
            ]
        );
        // From orange, jaune after 4 calm minutes and vert after 5; from jaune, vert after 5.
        for (from, expected) in [
            (
                Level::Orange,
                vec![(Level::Jaune, 4 * MIN), (Level::Vert, 5 * MIN)],
            ),
            (Level::Jaune, vec![(Level::Vert, 5 * MIN)]),
        ] {
            let mut m = Machine::new(Pace::default());
            m.observe(from, 0);
            let got: Vec<_> = (1..20 * 60)
                .filter_map(|t| m.observe(Level::Vert, t * S))
                .map(|c| (c.to, c.at_ms - S))
                .collect();
            assert_eq!(got, expected, "from {from}");
        }
    }

    #[test]
    fn signals_that_come_and_go_never_make_the_level_flap() {
        // Any sequence of wanted levels, one a second: at most one step down per minute, and
        // a step down only after three calm minutes since the last time the level was wanted
        // (five for the last step to vert).
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..50 {
            let mut m = Machine::new(Pace::default());
            let mut last_down: Option<u64> = None;
            let mut last_wanted_at_level = 0u64;
            for t in 0..4_000u64 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                // Mostly calm, with bursts.
                let wanted = match seed % 100 {
                    0..=1 => Level::Rouge,
                    2..=4 => Level::Orange,
                    5..=9 => Level::Jaune,
                    _ => Level::Vert,
                };
                let now = t * S;
                if wanted >= m.level() {
                    last_wanted_at_level = now;
                }
                if let Some(c) = m.observe(wanted, now) {
                    if c.to < c.from {
                        assert_eq!(c.to, c.from.lower(), "one step at a time");
                        if let Some(d) = last_down {
                            assert!(now - d >= MIN, "two steps down within a minute");
                        }
                        assert!(now - last_wanted_at_level >= 3 * MIN - S);
                        if c.to == Level::Vert {
                            assert!(now - last_wanted_at_level >= 5 * MIN - S);
                        }
                        last_down = Some(now);
                    } else {
                        assert_eq!(c.to, wanted, "raised straight to what is wanted");
                    }
                }
            }
        }
    }

    #[test]
    fn an_operators_level_holds_until_it_expires_then_falls_like_any_other() {
        let mut m = Machine::new(Pace::default());
        let set = m
            .set_override(Level::Rouge, 2 * 3_600 * S, "exercice CERT", 0)
            .unwrap();
        assert_eq!(set.cause, Cause::Operator("exercice CERT".into()));
        assert_eq!(m.override_until(), Some((Level::Rouge, 2 * 3_600 * S)));
        // The signals are calm, the operator's level holds.
        for t in (0..2 * 3_600 * S).step_by(10_000) {
            assert_eq!(m.observe(Level::Vert, t), None);
        }
        // Expired: down from rouge one step a minute, vert after the quiet period.
        let end = 2 * 3_600 * S;
        let downs: Vec<_> = (end..end + 10 * MIN)
            .step_by(1000)
            .filter_map(|t| m.observe(Level::Vert, t))
            .map(|c| (c.to, c.at_ms - end))
            .collect();
        assert_eq!(
            downs,
            [
                (Level::Orange, 3 * MIN),
                (Level::Jaune, 4 * MIN),
                (Level::Vert, 5 * MIN)
            ]
        );
        // An expiry while the signals call for more raises at once.
        m.set_override(Level::Jaune, 100 * MIN, "test", 90 * MIN);
        let c = m.observe(Level::Orange, 100 * MIN).unwrap();
        assert_eq!((c.to, c.cause), (Level::Orange, Cause::OverrideExpired));
    }

    #[test]
    fn names_parse_in_french_and_english() {
        for l in Level::ALL {
            assert_eq!(Level::parse(l.name()), Some(l));
        }
        assert_eq!(Level::parse("Red"), Some(Level::Rouge));
        assert_eq!(Level::parse("violet"), None);
        assert!(Level::Rouge > Level::Orange && Level::Jaune > Level::Vert);
    }
}
