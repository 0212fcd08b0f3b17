//! The demo's back-office application ("Portail des agents"): paginated JSON records of
//! synthetic residents with French personal data (NIR with a valid key, IBAN, phone, e-mail),
//! one record by its identifier, a CSV export streamed in small pieces, and a debug page that
//! leaks a NIR. Every value is generated from the record's number: nothing is real. Used by
//! `rempart demo`, the tests and the exfiltration drill.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;

const SURNAMES: [&str; 12] = [
    "Martin", "Bernard", "Thomas", "Petit", "Robert", "Richard", "Durand", "Dubois", "Moreau",
    "Laurent", "Simon", "Michel",
];
const GIVEN: [&str; 12] = [
    "Jean", "Marie", "Pierre", "Nathalie", "Louis", "Camille", "Paul", "Léa", "Hugo", "Chloé",
    "Jules", "Manon",
];

/// One synthetic resident.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Person {
    /// Record number.
    pub id: u64,
    /// Surname.
    pub nom: String,
    /// Given name.
    pub prenom: String,
    /// Social-security number, grouped (`1 85 05 78 006 084 91`).
    pub nir: String,
    /// Phone, grouped (`06 12 34 56 78`).
    pub telephone: String,
    /// E-mail address.
    pub email: String,
    /// IBAN, in groups of four.
    pub iban: String,
}

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A NIR (13 digits and their key) for the number `r`.
fn nir(r: u64) -> String {
    let sex = 1 + r % 2;
    let year = (r >> 1) % 100;
    let month = 1 + (r >> 8) % 12;
    // Departments 01-95 but 20 (Corsica is written 2A/2B).
    let mut dept = 1 + (r >> 12) % 95;
    if dept == 20 {
        dept = 21;
    }
    let commune = 1 + (r >> 20) % 989;
    let order = 1 + (r >> 32) % 999;
    let n: u64 = format!("{sex}{year:02}{month:02}{dept:02}{commune:03}{order:03}")
        .parse()
        .unwrap_or(0);
    let key = 97 - n % 97;
    format!("{sex} {year:02} {month:02} {dept:02} {commune:03} {order:03} {key:02}")
}

/// A French IBAN (mod-97 check digits) for the number `r`, in groups of four.
fn iban(r: u64) -> String {
    let bban = format!(
        "{:05}{:05}{:011}{:02}",
        10_000 + r % 90_000,
        (r >> 17) % 100_000,
        (r >> 7) % 100_000_000_000,
        (r >> 40) % 97
    );
    // FR00 moved to the end, letters as numbers (F = 15, R = 27).
    let digits = format!("{bban}152700");
    let rem = digits
        .bytes()
        .fold(0u64, |acc, d| (acc * 10 + u64::from(d - b'0')) % 97);
    let packed = format!("FR{:02}{bban}", 98 - rem);
    packed
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The resident with record number `id`.
pub fn person(id: u64) -> Person {
    let r = mix(id);
    let nom = SURNAMES[(r % 12) as usize];
    let prenom = GIVEN[((r >> 4) % 12) as usize];
    let phone = 600_000_000 + (r >> 9) % 200_000_000;
    let p = format!("0{phone}");
    let telephone = format!(
        "{} {} {} {} {}",
        &p[0..2],
        &p[2..4],
        &p[4..6],
        &p[6..8],
        &p[8..10]
    );
    let ascii = |s: &str| s.to_lowercase().replace('é', "e").replace('ï', "i");
    Person {
        id,
        nom: nom.to_owned(),
        prenom: prenom.to_owned(),
        nir: nir(r),
        telephone,
        email: format!("{}.{}{id}@exemple.fr", ascii(prenom), ascii(nom)),
        iban: iban(mix(r)),
    }
}

/// Records in the application.
pub const RECORDS: u64 = 100_000;

/// `?page=N&per_page=M`.
#[derive(serde::Deserialize)]
struct Page {
    page: Option<u64>,
    per_page: Option<u64>,
}

/// The agent logged in (the Basic user), which the application names in `X-Agent`.
fn agent(headers: &HeaderMap) -> Option<HeaderValue> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let user = decoded.split(|b| *b == b':').next()?;
    HeaderValue::from_bytes(user).ok()
}

async fn list(headers: HeaderMap, Query(q): Query<Page>) -> Response {
    let per_page = q.per_page.unwrap_or(20).clamp(1, 500);
    let page = q.page.unwrap_or(1).max(1);
    let first = (page - 1) * per_page + 1;
    let data: Vec<Person> = (first..first + per_page)
        .filter(|id| *id <= RECORDS)
        .map(person)
        .collect();
    let n = data.len();
    let body = serde_json::json!({ "data": data, "page": page, "per_page": per_page });
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut()
        .insert("x-record-count", HeaderValue::from(n));
    if let Some(a) = agent(&headers) {
        resp.headers_mut().insert("x-agent", a);
    }
    resp
}

async fn one(headers: HeaderMap, Path(id): Path<u64>) -> Response {
    if id == 0 || id > RECORDS {
        return (StatusCode::NOT_FOUND, "dossier inconnu\n").into_response();
    }
    let mut resp = axum::Json(person(id)).into_response();
    if let Some(a) = agent(&headers) {
        resp.headers_mut().insert("x-agent", a);
    }
    resp
}

/// `?n=N`: a CSV of the first N residents, streamed in pieces of 7 bytes (items cut
/// everywhere).
async fn export(
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let n: u64 = q
        .get("n")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .min(RECORDS);
    let mut text = String::from("id;nom;prenom;nir;telephone;email;iban\n");
    for id in 1..=n {
        let p = person(id);
        text.push_str(&format!(
            "{};{};{};{};{};{};{}\n",
            p.id, p.nom, p.prenom, p.nir, p.telephone, p.email, p.iban
        ));
    }
    let pieces: Vec<Result<bytes::Bytes, std::convert::Infallible>> = text
        .into_bytes()
        .chunks(7)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let body = Body::from_stream(futures_util::stream::iter(pieces));
    let mut resp = ([("content-type", "text/csv; charset=utf-8")], body).into_response();
    if let Some(a) = agent(&headers) {
        resp.headers_mut().insert("x-agent", a);
    }
    resp
}

/// A debug page left on by mistake: it shows a resident's NIR.
async fn debug() -> Response {
    let p = person(42);
    let page = format!(
        "<!doctype html><title>debug</title><pre>last query: SELECT * FROM usagers WHERE id = 42\nrow: {} {} nir={}\n</pre>",
        p.prenom, p.nom, p.nir
    );
    ([("content-type", "text/html; charset=utf-8")], page).into_response()
}

/// A page of three residents gzipped whatever the request asked (a misbehaving
/// application), streamed in pieces of 5 bytes.
async fn compressed() -> Response {
    use std::io::Write;
    let data: Vec<Person> = (1..=3).map(person).collect();
    let json = serde_json::to_vec(&serde_json::json!({ "data": data })).unwrap_or_default();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = gz.write_all(&json);
    let packed = gz.finish().unwrap_or_default();
    let pieces: Vec<Result<bytes::Bytes, std::convert::Infallible>> = packed
        .chunks(5)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    (
        [
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        Body::from_stream(futures_util::stream::iter(pieces)),
    )
        .into_response()
}

/// An answer in a coding the gateway cannot read.
async fn brotli() -> Response {
    (
        [
            ("content-type", "application/json"),
            ("content-encoding", "br"),
        ],
        vec![0x1bu8, 0x03, 0, 0],
    )
        .into_response()
}

/// The back-office application's router.
pub fn router() -> Router {
    Router::new()
        .route("/api/usagers", get(list))
        .route("/api/usagers/{id}", get(one))
        .route("/api/export.csv", get(export))
        .route("/api/compresse", get(compressed))
        .route("/api/brotli", get(brotli))
        .route("/debug", get(debug))
        .route("/healthz", get(|| async { "ok" }))
}

/// Starts the back-office application on an ephemeral loopback port.
pub async fn start() -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router()).await;
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_synthetic_resident_carries_valid_personal_data() {
        for id in 1..2_000 {
            let p = person(id);
            let text = format!("{} ; {} ; {} ; {}", p.nir, p.iban, p.telephone, p.email);
            let counts = crate::guard::scan::count(text.as_bytes());
            assert_eq!(counts, [1, 1, 0, 1, 1, 0], "{id}: {text}");
        }
    }
}
