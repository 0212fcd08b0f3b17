//! `rempart guard`: scan files for personal data; see and act on the accounts of a running
//! gateway (admin API); write the breach-scope report of an account from the access journal
//! (no gateway needed).

use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::{admin_call, admin_failure, admin_of, scan_file, scan_report};
use crate::guard::account::AccountId;
use crate::guard::scan::Kind;

/// `rempart guard` actions.
#[derive(Debug, Subcommand)]
pub enum GuardAction {
    /// Count, per file and per kind, the personal data items found (NIR, IBAN, payment
    /// cards, phone numbers, e-mail addresses); exit 0, or 1 when a file cannot be read.
    Scan {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Files to scan.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// The accounts of a running gateway's guarded routes, those that took the most first.
    Accounts {
        /// Configuration file of the running gateway (gives the admin address and token).
        #[arg(long, short)]
        config: PathBuf,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Print the admin API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// One account: what it took, from where, its standing.
    Show(AccountArgs),
    /// Lift an account's suspension.
    Lift(AccountArgs),
    /// Suspend an account on every guarded route of its tenant, until lifted.
    Suspend(AccountArgs),
    /// The guarded routes of each tenant, with their budgets.
    Budgets {
        /// Configuration file of the running gateway.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// The breach-scope report of an account (GDPR art. 33), from the access journal:
    /// distinct persons, kinds of data, records per route and per hour, prefixes used.
    Report {
        /// Configuration file (gives the journal and the key of the accounts' hashes).
        #[arg(long, short)]
        config: PathBuf,
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// The account: its identifier (16 hex digits) or its name (with `--source`).
        account: String,
        /// Where the name comes from: basic, jwt, header, origin, cookie.
        #[arg(long, default_value = "basic")]
        source: String,
        /// Start: `2026-12-01`, `2026-12-01T08:00`, unix seconds, or `-72h` (default: 30 days
        /// ago).
        #[arg(long)]
        from: Option<String>,
        /// End, same forms (default: now).
        #[arg(long)]
        to: Option<String>,
        /// Print JSON instead of Markdown.
        #[arg(long)]
        json: bool,
    },
}

/// One account of a running gateway.
#[derive(Debug, clap::Args)]
pub struct AccountArgs {
    /// Configuration file of the running gateway (gives the admin address and token).
    #[arg(long, short)]
    config: PathBuf,
    /// Tenant id.
    tenant: String,
    /// The account: its identifier (16 hex digits) or its name (with `--source`).
    account: String,
    /// Where the name comes from: basic, jwt, header, origin, cookie.
    #[arg(long, default_value = "basic")]
    source: String,
}

/// Runs `action`, printing to stdout; the exit code.
pub async fn run(action: GuardAction) -> i32 {
    match action {
        GuardAction::Scan { json, files } => {
            let mut code = 0;
            let mut rows = Vec::new();
            for file in &files {
                match scan_file(file) {
                    Ok(counts) => rows.push((file.display().to_string(), counts)),
                    Err(e) => {
                        eprintln!("{}: {e}", file.display());
                        code = 1;
                    }
                }
            }
            print!("{}", scan_report(&rows, json));
            code
        }
        GuardAction::Accounts {
            config,
            tenant,
            json,
        } => {
            let path = match tenant {
                Some(t) => format!("/admin/guard/accounts?tenant={}", encode(&t)),
                None => "/admin/guard/accounts".into(),
            };
            admin(&config, http::Method::GET, path, |body| {
                if json {
                    body.to_owned()
                } else {
                    accounts_table(body)
                }
            })
            .await
        }
        GuardAction::Show(a) => {
            let path = account_path(&a.tenant, &a.account, &a.source, "");
            admin(&a.config, http::Method::GET, path, str::to_owned).await
        }
        GuardAction::Lift(a) => {
            let path = account_path(&a.tenant, &a.account, &a.source, "/lift");
            admin(&a.config, http::Method::POST, path, |_| "lifted\n".into()).await
        }
        GuardAction::Suspend(a) => {
            let path = account_path(&a.tenant, &a.account, &a.source, "/suspend");
            admin(&a.config, http::Method::POST, path, |_| {
                "suspended\n".into()
            })
            .await
        }
        GuardAction::Budgets { config } => {
            let path = "/admin/guard/budgets".to_owned();
            admin(&config, http::Method::GET, path, str::to_owned).await
        }
        GuardAction::Report {
            config,
            tenant,
            account,
            source,
            from,
            to,
            json,
        } => report(&config, &tenant, &account, &source, from, to, json),
    }
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn is_id(account: &str) -> bool {
    account.len() == 16 && account.bytes().all(|b| b.is_ascii_hexdigit())
}

fn account_path(tenant: &str, account: &str, source: &str, action: &str) -> String {
    if is_id(account) {
        format!("/admin/guard/accounts/{}/{account}{action}", encode(tenant))
    } else {
        format!(
            "/admin/guard/accounts/{}/-{action}?name={}&source={}",
            encode(tenant),
            encode(account),
            encode(source)
        )
    }
}

async fn admin(
    config: &Path,
    method: http::Method,
    path: String,
    render: impl FnOnce(&str) -> String,
) -> i32 {
    let (address, token) = match admin_of(config, "asking the gateway") {
        Ok(x) => x,
        Err(code) => return code,
    };
    match admin_call(address, &token, method, path, None).await {
        Ok((200, body)) => {
            print!("{}", render(&body));
            0
        }
        other => admin_failure(other, address),
    }
}

/// The accounts list as a table per tenant.
fn accounts_table(body: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return body.to_owned();
    };
    let mut out = String::new();
    for t in v["tenants"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "tenant {} ({} accounts tracked)\n",
            t["tenant"].as_str().unwrap_or("?"),
            t["tracked"]
        ));
        out.push_str("account\twho\tname\trecords\tanswers\tstanding\tlast prefix\n");
        for a in t["accounts"].as_array().into_iter().flatten() {
            let standing = if a["suspended"] == true {
                "suspended".to_owned()
            } else {
                a["action"]["action"].as_str().unwrap_or("-").to_owned()
            };
            out.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                a["account"].as_str().unwrap_or("?"),
                a["who"].as_str().unwrap_or("?"),
                a["label"].as_str().unwrap_or("-"),
                a["records"],
                a["answers"],
                standing,
                a["prefixes"][0]["prefix"].as_str().unwrap_or("-"),
            ));
        }
    }
    out
}

/// A time for the report: unix seconds, `-72h` before now, or a date (and time) in the
/// configuration's time zone.
fn parse_when(s: &str, now_s: u64, zone: crate::common::TimeZone) -> Option<u64> {
    let s = s.trim();
    if let Some(back) = s.strip_prefix('-') {
        let d = crate::common::parse_duration(back).ok()?;
        return Some(now_s.saturating_sub(d.as_secs()));
    }
    let with_time = if s.len() == 10 && s.as_bytes().get(4) == Some(&b'-') {
        format!("{s}T00:00")
    } else {
        s.to_owned()
    };
    crate::status::model::parse_time(&with_time, now_s, zone)
}

fn report(
    config: &Path,
    tenant: &str,
    account: &str,
    source: &str,
    from: Option<String>,
    to: Option<String>,
    json: bool,
) -> i32 {
    let rt = match crate::config::load(config) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let path = &rt.guard.database;
    if !path.exists() {
        eprintln!(
            "no access journal at {} (it is made when a route has a guard)",
            path.display()
        );
        return 1;
    }
    let now_s = crate::clock::unix_now();
    let zone = rt.status.time_zone;
    let parse = |what: &str, value: Option<&String>, default: u64| match value {
        None => Ok(default),
        Some(v) => parse_when(v, now_s, zone).ok_or_else(|| {
            format!("--{what} `{v}`: write 2026-12-01, 2026-12-01T08:00, unix seconds or -72h")
        }),
    };
    let (from_s, to_s) = match (
        parse("from", from.as_ref(), now_s.saturating_sub(30 * 86_400)),
        parse("to", to.as_ref(), now_s),
    ) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let id = if is_id(account) {
        account.parse::<AccountId>().unwrap_or(AccountId(0))
    } else {
        let key = match &rt.guard.key {
            Some(k) => k.to_vec(),
            None => match crate::guard::journal::stored_key(path) {
                Ok(Some(k)) => k,
                Ok(None) => {
                    eprintln!("the journal holds no key yet: give the account's identifier");
                    return 1;
                }
                Err(e) => {
                    eprintln!("{e}");
                    return 1;
                }
            },
        };
        let Some(tag) = crate::guard::account::source_tag(source) else {
            eprintln!("unknown source `{source}`: cookie, basic, jwt, header or origin");
            return 2;
        };
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
        AccountId::keyed(&key, tag, account.as_bytes())
    };
    // The end second is included whole.
    let to_ms = to_s * 1000 + 999;
    match crate::guard::journal::activity(path, tenant, id, from_s * 1000, to_ms) {
        Ok(a) => {
            let r = Report {
                tenant,
                account: id,
                name: (!is_id(account)).then_some(account),
                from_s,
                to_s,
                activity: &a,
            };
            print!("{}", if json { r.json() } else { r.markdown() });
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// The breach-scope report of one account.
pub struct Report<'a> {
    /// Tenant id.
    pub tenant: &'a str,
    /// The account.
    pub account: AccountId,
    /// Its name, when the operator gave it.
    pub name: Option<&'a str>,
    /// Period start, unix seconds.
    pub from_s: u64,
    /// Period end.
    pub to_s: u64,
    /// What the journal holds.
    pub activity: &'a crate::guard::journal::Activity,
}

/// Standard error of the distinct counts (HyperLogLog, 256 registers): 1.04 / sqrt(256).
const DISTINCT_ERROR: f64 = 0.065;

impl Report<'_> {
    fn persons(&self) -> u64 {
        self.activity.distinct.iter().copied().max().unwrap_or(0)
    }

    /// The report as JSON.
    pub fn json(&self) -> String {
        let a = self.activity;
        let kinds: serde_json::Map<String, serde_json::Value> = Kind::ALL
            .iter()
            .map(|k| {
                let i = *k as usize;
                (
                    k.name().to_owned(),
                    serde_json::json!({ "items": a.pii[i], "distinct": a.distinct[i] }),
                )
            })
            .collect();
        let v = serde_json::json!({
            "tenant": self.tenant,
            "account": self.account.to_string(),
            "name": self.name,
            "from": crate::status::model::rfc3339(self.from_s),
            "to": crate::status::model::rfc3339(self.to_s),
            "answers": a.answers,
            "records": a.records,
            "distinct_persons": self.persons(),
            "distinct_persons_error": DISTINCT_ERROR * 2.0,
            "distinct_record_ids": a.distinct_ids,
            "kinds": kinds,
            "first": a.first_ms.map(|ms| crate::status::model::rfc3339(ms / 1000)),
            "last": a.last_ms.map(|ms| crate::status::model::rfc3339(ms / 1000)),
            "routes": a.routes.iter().map(|(r, n)| serde_json::json!({ "route": r, "records": n })).collect::<Vec<_>>(),
            "hours": a.hours.iter().map(|(h, n)| serde_json::json!({ "hour": crate::status::model::rfc3339(h / 1000), "records": n })).collect::<Vec<_>>(),
            "prefixes": a.prefixes,
            "fingerprints": a.fingerprints,
            "known_as": a.who,
            "events": a.events.iter().map(|(at, kind, detail)| serde_json::json!({ "at": crate::status::model::rfc3339(at / 1000), "kind": kind, "detail": detail })).collect::<Vec<_>>(),
            "suspended": a.suspended,
        });
        format!("{v}\n")
    }

    /// The report as Markdown, for the DPO's file.
    pub fn markdown(&self) -> String {
        use std::fmt::Write as _;
        let a = self.activity;
        let t = crate::status::model::rfc3339;
        let mut out = String::new();
        let who = match self.name {
            Some(n) => format!("{n} (identifier {})", self.account),
            None => format!("identifier {}", self.account),
        };
        let _ = writeln!(
            out,
            "# Breach scope report: account {who}, tenant {}\n",
            self.tenant
        );
        let _ = writeln!(out, "Period: {} to {} (UTC).", t(self.from_s), t(self.to_s));
        if a.answers == 0 {
            let _ = writeln!(
                out,
                "\nThe journal holds no activity of this account in this period."
            );
            return out;
        }
        let _ = writeln!(
            out,
            "Activity: {} answers, from {} to {}. Known as: {}. Suspended now: {}.\n",
            a.answers,
            a.first_ms.map_or("-".into(), |ms| t(ms / 1000)),
            a.last_ms.map_or("-".into(), |ms| t(ms / 1000)),
            a.who.join(", "),
            if a.suspended { "yes" } else { "no" }
        );
        let persons = self.persons();
        let margin = (persons as f64 * DISTINCT_ERROR * 2.0).ceil() as u64;
        let _ = writeln!(out, "## Persons concerned\n");
        if a.pii.iter().all(|n| *n == 0) {
            let _ = writeln!(
                out,
                "- No personal-data item was seen in the answers (a route without a scan counts records only)."
            );
        } else {
            let _ = writeln!(
                out,
                "- Distinct persons whose personal data was shown: about {persons} (± {margin}, 95 %: the journal keeps distinct counts, never the data)."
            );
        }
        let _ = writeln!(out, "- Records taken: {}.", a.records);
        if a.distinct_ids > 0 {
            let _ = writeln!(
                out,
                "- Distinct records opened by identifier: about {}.",
                a.distinct_ids
            );
        }
        let _ = writeln!(out, "\n## Categories of personal data\n");
        let _ = writeln!(out, "| kind | items shown | distinct |");
        let _ = writeln!(out, "| --- | --- | --- |");
        for k in Kind::ALL {
            let i = k as usize;
            if a.pii[i] > 0 {
                let _ = writeln!(
                    out,
                    "| {} | {} | about {} |",
                    k.name(),
                    a.pii[i],
                    a.distinct[i]
                );
            }
        }
        let _ = writeln!(out, "\n## Records per route\n");
        let _ = writeln!(out, "| route | records |");
        let _ = writeln!(out, "| --- | --- |");
        for (r, n) in &a.routes {
            let _ = writeln!(out, "| {r} | {n} |");
        }
        let _ = writeln!(out, "\n## Records per hour (UTC)\n");
        let _ = writeln!(out, "| hour | records |");
        let _ = writeln!(out, "| --- | --- |");
        for (h, n) in &a.hours {
            let _ = writeln!(out, "| {} | {n} |", t(h / 1000));
        }
        let _ = writeln!(out, "\n## Where from\n");
        let _ = writeln!(out, "- Client prefixes: {}.", a.prefixes.join(", "));
        let _ = writeln!(
            out,
            "- Distinct client fingerprints (software): {}.",
            a.fingerprints
        );
        if !a.events.is_empty() {
            let _ = writeln!(out, "\n## Events\n");
            for (at, kind, detail) in &a.events {
                let _ = writeln!(out, "- {} {kind} {detail}", t(at / 1000));
            }
        }
        out
    }
}
