//! The data guard's settings: the accounts' hash key and bound, each tenant's account
//! sources, each route's records, budgets and personal-data policy.

use std::path::Path;
use std::sync::Arc;

use super::Collector;
use crate::config::file::{GuardFile, RouteGuardFile, TenantGuardFile};
use crate::config::runtime::GuardSettings;
use crate::guard::account::{JwtVerifier, Source};
use crate::guard::answer::{KindSet, PiiPolicy};
use crate::guard::budget::{Action, Budget};
use crate::guard::ids::IdTemplate;
use crate::guard::policy::{RouteGuard, TenantGuard};

/// Default accounts tracked per tenant.
pub const DEFAULT_MAX_ACCOUNTS: usize = 100_000;
/// Default path of the access journal (next to the configuration).
pub const DEFAULT_DATABASE: &str = "rempart-guard.db";
/// Default days the journal keeps.
const DEFAULT_JOURNAL_DAYS: u32 = 365;
/// Default delay of an answer while over a `slow` budget.
const DEFAULT_SLOW_DELAY: &str = "2s";

/// The global `[guard]` table.
pub(super) fn settings(c: &mut Collector, file: &GuardFile, base: &Path) -> GuardSettings {
    let max_accounts = file.max_accounts.unwrap_or(DEFAULT_MAX_ACCOUNTS);
    if !(1..=10_000_000).contains(&max_accounts) {
        c.push(
            "guard.max_accounts",
            format!("{max_accounts} is out of range"),
            Some("use 1 to 10000000 (each account tracked costs about 1 KiB)"),
        );
    }
    let key = file.key_file.as_ref().and_then(|f| {
        let path = base.join(f);
        match std::fs::read(&path) {
            Ok(bytes) if bytes.trim_ascii().len() >= 32 => Some(Arc::from(bytes.trim_ascii())),
            Ok(bytes) => {
                // Never echo the key itself.
                let n = bytes.trim_ascii().len();
                c.push(
                    "guard.key_file",
                    format!("`{}` holds {n} bytes, too short", path.display()),
                    Some("at least 32 bytes, for example `openssl rand -hex 32`"),
                );
                None
            }
            Err(e) => {
                c.push(
                    "guard.key_file",
                    format!("cannot read `{}`: {e}", path.display()),
                    None,
                );
                None
            }
        }
    });
    let journal_days = file.journal_days.unwrap_or(DEFAULT_JOURNAL_DAYS);
    if !(1..=3650).contains(&journal_days) {
        c.push(
            "guard.journal_days",
            format!("{journal_days} is out of range"),
            Some("use 1 to 3650 (a year is usual for traces of access to personal data)"),
        );
    }
    GuardSettings {
        max_accounts: max_accounts.clamp(1, 10_000_000),
        key,
        database: base.join(file.database.as_deref().unwrap_or(DEFAULT_DATABASE)),
        journal_days: journal_days.clamp(1, 3650),
    }
}

/// A tenant's `guard` table: its account sources.
pub(super) fn tenant(
    c: &mut Collector,
    p: &str,
    file: Option<&TenantGuardFile>,
    base: &Path,
) -> Arc<TenantGuard> {
    let Some(file) = file else {
        return Arc::default();
    };
    let mut sources = Vec::new();
    for (i, s) in file.accounts.iter().enumerate() {
        let sp = format!("{p}.guard.accounts[{i}]");
        let given = [
            s.cookie.is_some(),
            s.basic.is_some(),
            s.jwt_secret_file.is_some(),
            s.jwt_jwks_file.is_some(),
            s.header.is_some(),
        ]
        .iter()
        .filter(|g| **g)
        .count();
        if given != 1 {
            c.push(
                &sp,
                format!("{given} sources in one entry"),
                Some("each entry names exactly one of cookie, basic, jwt_secret_file, jwt_jwks_file, header"),
            );
            continue;
        }
        let claim = s.claim.as_deref().unwrap_or("sub");
        if s.claim.is_some() && s.jwt_secret_file.is_none() && s.jwt_jwks_file.is_none() {
            c.push(
                format!("{sp}.claim"),
                "claim applies to JWT sources only",
                None,
            );
        }
        let source = if let Some(name) = &s.cookie {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"=;,".contains(&b))
            {
                c.push(
                    format!("{sp}.cookie"),
                    format!("`{name}` is not a cookie name"),
                    None,
                );
                continue;
            }
            Source::Cookie(name.clone())
        } else if let Some(basic) = s.basic {
            if !basic {
                continue;
            }
            Source::Basic
        } else if let Some(f) = &s.jwt_secret_file {
            let path = base.join(f);
            match std::fs::read(&path) {
                Ok(bytes) if bytes.trim_ascii().len() >= 32 => {
                    Source::Bearer(JwtVerifier::hs256(bytes.trim_ascii(), claim))
                }
                Ok(_) => {
                    c.push(
                        format!("{sp}.jwt_secret_file"),
                        format!("`{}` holds less than 32 bytes", path.display()),
                        Some("an HS256 secret shorter than its hash is guessable"),
                    );
                    continue;
                }
                Err(e) => {
                    c.push(
                        format!("{sp}.jwt_secret_file"),
                        format!("cannot read `{}`: {e}", path.display()),
                        None,
                    );
                    continue;
                }
            }
        } else if let Some(f) = &s.jwt_jwks_file {
            let path = base.join(f);
            let verifier = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read `{}`: {e}", path.display()))
                .and_then(|text| {
                    JwtVerifier::from_jwks(&text, claim)
                        .map_err(|e| format!("`{}`: {e}", path.display()))
                });
            match verifier {
                Ok(v) => Source::Bearer(v),
                Err(e) => {
                    c.push(
                        format!("{sp}.jwt_jwks_file"),
                        e,
                        Some("a JWKS document: {\"keys\": [{\"kty\": \"RSA\", \"n\": ..., \"e\": ...}]}"),
                    );
                    continue;
                }
            }
        } else {
            let name = s.header.as_deref().unwrap_or_default();
            match http::HeaderName::from_bytes(name.as_bytes()) {
                Ok(h) => Source::Header(h),
                Err(_) => {
                    c.push(
                        format!("{sp}.header"),
                        format!("`{name}` is not a field name"),
                        None,
                    );
                    continue;
                }
            }
        };
        sources.push(source);
    }
    let origin_account = file.origin_account_header.as_ref().and_then(|h| {
        let parsed = http::HeaderName::from_bytes(h.as_bytes()).ok();
        if parsed.is_none() {
            c.push(
                format!("{p}.guard.origin_account_header"),
                format!("`{h}` is not a field name"),
                None,
            );
        }
        parsed
    });
    let defaults = crate::guard::book::Baseline::default();
    let factor = file.baseline_factor.unwrap_or(defaults.factor);
    if !(factor == 0.0 || (1.5..=1000.0).contains(&factor)) {
        c.push(
            format!("{p}.guard.baseline_factor"),
            format!("{factor} is out of range"),
            Some("0 turns the baseline off; otherwise 1.5 to 1000 (6 flags an account taking six times its usual volume)"),
        );
    }
    let baseline = (factor > 0.0).then(|| crate::guard::book::Baseline {
        factor: factor.clamp(1.5, 1000.0),
        min_records: file.baseline_min_records.unwrap_or(defaults.min_records),
        min_hours: file.baseline_min_hours.unwrap_or(defaults.min_hours),
    });
    let office_hours =
        file.office_hours
            .as_ref()
            .and_then(
                |text| match crate::guard::policy::OfficeHours::parse(text) {
                    Ok(h) => Some(h),
                    Err(e) => {
                        c.push(
                            format!("{p}.guard.office_hours"),
                            e,
                            Some("local time of status.time_zone"),
                        );
                        None
                    }
                },
            );
    let mut groups = std::collections::HashMap::new();
    for (group, members) in &file.groups {
        if group.is_empty() || group.len() > 64 || group.contains(',') {
            c.push(
                format!("{p}.guard.groups.{group}"),
                format!("`{group}` is not a group name"),
                Some("1 to 64 characters, no comma"),
            );
        }
        for m in members {
            if let Some(other) = groups.insert(m.clone(), group.clone()) {
                c.push(
                    format!("{p}.guard.groups.{group}"),
                    format!("`{m}` is in groups `{other}` and `{group}`"),
                    Some("an account belongs to one group here; the single sign-on's field may name several"),
                );
            }
        }
    }
    let group_header = file.group_header.as_ref().and_then(|h| {
        let parsed = http::HeaderName::from_bytes(h.as_bytes()).ok();
        if parsed.is_none() {
            c.push(
                format!("{p}.guard.group_header"),
                format!("`{h}` is not a field name"),
                None,
            );
        }
        parsed
    });
    Arc::new(TenantGuard {
        sources,
        origin_account,
        baseline,
        office_hours,
        groups,
        group_header,
    })
}

/// A route's `guard` table.
pub(super) fn route(
    c: &mut Collector,
    rp: &str,
    file: &RouteGuardFile,
    tenant: &TenantGuard,
) -> Arc<RouteGuard> {
    let gp = format!("{rp}.guard");
    let record_header = file.record_header.as_ref().and_then(|h| {
        let parsed = http::HeaderName::from_bytes(h.as_bytes()).ok();
        if parsed.is_none() {
            c.push(
                format!("{gp}.record_header"),
                format!("`{h}` is not a field name"),
                None,
            );
        }
        parsed
    });
    if let Some(path) = &file.json_records {
        if path.is_empty() || path.split('.').any(str::is_empty) && path != "$" {
            c.push(
                format!("{gp}.json_records"),
                format!("`{path}` is not a path"),
                Some(
                    "keys separated by dots (`data.items`), or `$` for an answer that is an array",
                ),
            );
        }
    }
    let mut record_ids = Vec::new();
    for (i, t) in file.record_ids.iter().enumerate() {
        match IdTemplate::parse(t) {
            Ok(t) => record_ids.push(t),
            Err(e) => c.push(
                format!("{gp}.record_ids[{i}]"),
                format!("`{t}`: {e}"),
                Some("for example \"/dossiers/{id}\" or \"/usagers/{id}/...\""),
            ),
        }
    }
    let kinds = |c: &mut Collector, key: &str, names: &[String]| {
        let mut set = KindSet::NONE;
        for (i, n) in names.iter().enumerate() {
            match KindSet::parse_kind(n) {
                Some(k) => set = set.with(k),
                None => c.push(
                    format!("{gp}.{key}[{i}]"),
                    format!("unknown kind `{n}`"),
                    Some("nir, iban, card, phone, email or birth_date"),
                ),
            }
        }
        set
    };
    let mask = kinds(c, "pii_mask", &file.pii_mask);
    let block = kinds(c, "pii_block", &file.pii_block);
    let mut budgets = Vec::new();
    let mut group_budgets: Vec<(String, Vec<Budget>)> = Vec::new();
    for (i, b) in file.budgets.iter().enumerate() {
        let bp = format!("{gp}.budgets[{i}]");
        let window = c.duration(&format!("{bp}.per"), Some(&b.per), "");
        let action = match b.action.as_str() {
            "log" => Action::Log,
            "alert" => Action::Alert,
            "slow" => Action::Slow,
            "block" => Action::Block,
            "suspend" => Action::Suspend,
            other => {
                c.push(
                    format!("{bp}.action"),
                    format!("unknown action `{other}`"),
                    Some("log, alert, slow, block or suspend"),
                );
                Action::Log
            }
        };
        c.at_most(&format!("{bp}.records"), b.records, 1 << 40, "records");
        let budget = Budget {
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1),
            limit: b.records,
            action,
        };
        match &b.group {
            None => budgets.push(budget),
            Some(g) => {
                let known = tenant.groups.values().any(|x| x == g) || tenant.group_header.is_some();
                if !known {
                    c.push(
                        format!("{bp}.group"),
                        format!("no account is ever in group `{g}`"),
                        Some("name it in the tenant's guard.groups, or set guard.group_header"),
                    );
                }
                match group_budgets.iter_mut().find(|(name, _)| name == g) {
                    Some((_, list)) => list.push(budget),
                    None => group_budgets.push((g.clone(), vec![budget])),
                }
            }
        }
    }
    let counted = record_header.is_some()
        || file.json_records.is_some()
        || !record_ids.is_empty()
        || file.count_persons;
    if (!budgets.is_empty() || !group_budgets.is_empty()) && !counted {
        c.push(
            format!("{gp}.budgets"),
            "budgets, but nothing counts records on this route",
            Some("add record_header, json_records, record_ids or count_persons = true"),
        );
    }
    if budgets.is_empty() && group_budgets.is_empty() && mask.is_empty() && block.is_empty() {
        c.push(
            &gp,
            "this guard does nothing",
            Some("give budgets (with what counts records), pii_mask or pii_block"),
        );
    }
    let slow_delay = c.duration(
        &format!("{gp}.slow_delay"),
        file.slow_delay.as_deref(),
        DEFAULT_SLOW_DELAY,
    );
    Arc::new(RouteGuard {
        budgets,
        group_budgets,
        record_header,
        json_records: file.json_records.clone(),
        record_ids,
        count_persons: file.count_persons,
        pii: PiiPolicy {
            scan: file.count_persons || !mask.is_empty() || !block.is_empty(),
            mask,
            block,
        },
        slow_delay,
    })
}

#[cfg(test)]
mod tests {
    fn problems(guard: &str, route_guard: &str) -> String {
        let text = format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[[tenants]]\nid = \"t\"\nname = \"T\"\nhosts = [\"t.test\"]\n{guard}\n[[tenants.pools]]\nname = \"p\"\nservers = [{{ address = \"127.0.0.1:9\" }}]\n\n[[tenants.routes]]\npath_prefix = \"/\"\npool = \"p\"\n{route_guard}\n"
        );
        match crate::config::load_str(&text, std::path::Path::new("t.toml")) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn guard_settings_that_cannot_work_are_refused_with_a_hint() {
        let ok = problems(
            "[tenants.guard]\naccounts = [{ basic = true }]\ngroups = { batch = [\"nuit\"] }\noffice_hours = \"mon-fri 08:00-18:00\"\n",
            "[tenants.routes.guard]\njson_records = \"data\"\nbudgets = [{ records = 10, per = \"1h\", action = \"block\" }, { records = 99, per = \"1h\", action = \"block\", group = \"batch\" }]\n",
        );
        assert_eq!(ok, "");
        for (guard, route, says) in [
            ("", "[tenants.routes.guard]\nbudgets = [{ records = 10, per = \"1h\", action = \"block\" }]\n", "nothing counts records"),
            ("", "[tenants.routes.guard]\n", "this guard does nothing"),
            ("", "[tenants.routes.guard]\njson_records = \"data\"\nbudgets = [{ records = 10, per = \"1h\", action = \"ban\" }]\n", "unknown action"),
            ("", "[tenants.routes.guard]\npii_mask = [\"ssn\"]\n", "unknown kind"),
            ("", "[tenants.routes.guard]\njson_records = \"data\"\nbudgets = [{ records = 10, per = \"1h\", action = \"block\", group = \"batch\" }]\n", "no account is ever in group"),
            ("[tenants.guard]\naccounts = [{ basic = true, cookie = \"S\" }]\n", "", "2 sources in one entry"),
            ("[tenants.guard]\naccounts = [{ jwt_secret_file = \"missing.key\" }]\n", "", "cannot read"),
            ("[tenants.guard]\noffice_hours = \"fri-mon 08:00-18:00\"\n", "", "the first day comes before the last"),
            ("[tenants.guard]\ngroups = { a = [\"x\"], b = [\"x\"] }\n", "", "is in groups"),
            ("[tenants.guard]\nbaseline_factor = 1.0\n", "", "baseline_factor"),
        ] {
            let got = problems(guard, route);
            assert!(got.contains(says), "{says}: {got}");
        }
    }
}
