//! Throughput of the personal-data scanner (`guard::scan`) and of a guarded answer's whole
//! scan (`guard::answer`: counting, and masking) on realistic answers: paginated JSON of
//! residents' files (the demo's back-office application: NIR, IBAN, phone, e-mail in every
//! record), the same as an HTML table, and a town's public HTML page with few items.
//! `cargo bench --bench scanner`; figures in BENCHMARKS.md ("Data guard").

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rempart::guard::answer::{AnswerScan, KindSet, PiiPolicy};
use rempart::guard::scan::{Kind, Scanner};

/// A page of `n` residents as the back-office application serves it (JSON).
fn json_page(n: u64) -> Vec<u8> {
    let data: Vec<_> = (1..=n).map(rempart::demo::backoffice::person).collect();
    serde_json::to_vec(&serde_json::json!({ "data": data, "page": 1, "per_page": n })).unwrap()
}

/// The same residents as an HTML table.
fn html_table(n: u64) -> Vec<u8> {
    let mut out = String::from("<!doctype html><html lang=fr><head><title>Dossiers</title></head><body><table>\n<tr><th>Nom</th><th>Prénom</th><th>NIR</th><th>Téléphone</th><th>Courriel</th><th>IBAN</th></tr>\n");
    for id in 1..=n {
        let p = rempart::demo::backoffice::person(id);
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><a href=\"mailto:{}\">{}</a></td><td>{}</td></tr>\n",
            p.nom, p.prenom, p.nir, p.telephone, p.email, p.email, p.iban
        ));
    }
    out.push_str("</table></body></html>\n");
    out.into_bytes()
}

/// A town's public page: prose, links, dates, a phone number and an address, little else.
fn public_page() -> Vec<u8> {
    let mut out = String::from("<!doctype html><html lang=fr><head><meta charset=utf-8><title>Mairie de Saint-Exemple</title><link rel=stylesheet href=/assets/site-2026.css></head><body>\n");
    for i in 0..200 {
        out.push_str(&format!(
            "<article id=\"actu-{i}\"><h2>Conseil municipal du {:02}/{:02}/2026</h2><p>Le conseil municipal se réunira salle 3 à 18 h 30. Ordre du jour : budget 2027, travaux de voirie rue Jean-Jaurès (lot n° 2026-{i:04}), subvention aux associations sportives. Renseignements à l'accueil de la mairie, 02 40 00 00 00, ou accueil@saint-exemple.fr.</p><a href=\"/actualites/{i}\">Lire la suite</a></article>\n",
            1 + i % 28,
            1 + i % 12
        ));
    }
    out.push_str("</body></html>\n");
    out.into_bytes()
}

fn scan(bytes: &[u8], chunk: usize) -> u64 {
    let mut s = Scanner::new();
    let mut n = 0u64;
    let mut count = |_f: rempart::guard::scan::Found| n += 1;
    for piece in bytes.chunks(chunk) {
        s.feed(piece, &mut count);
    }
    s.finish(&mut count);
    n
}

fn answer(bytes: &[u8], chunk: usize, policy: PiiPolicy) -> usize {
    let mut a = AnswerScan::new(policy, Some("data"));
    let mut out = Vec::with_capacity(chunk + 512);
    let mut sent = 0;
    for piece in bytes.chunks(chunk) {
        out.clear();
        a.feed(piece, &mut out);
        sent += out.len();
    }
    out.clear();
    a.finish(&mut out);
    sent + out.len() + a.persons() as usize
}

fn bench(c: &mut Criterion) {
    let answers = [
        ("json-100-records", json_page(100)),
        ("html-100-records", html_table(100)),
        ("public-page", public_page()),
    ];
    // Chunks of 16 KiB: what the upstream client reads at a time.
    let chunk = 16 * 1024;
    let mut g = c.benchmark_group("scanner");
    for (name, bytes) in &answers {
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_with_input(BenchmarkId::new("scan", name), bytes, |b, bytes| {
            b.iter(|| scan(std::hint::black_box(bytes), chunk))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("answer");
    let count = PiiPolicy {
        scan: true,
        ..PiiPolicy::default()
    };
    let mask = PiiPolicy {
        scan: true,
        mask: KindSet::NONE.with(Kind::Nir).with(Kind::Iban),
        block: KindSet::NONE,
    };
    for (name, bytes) in &answers[..2] {
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_with_input(BenchmarkId::new("count", name), bytes, |b, bytes| {
            b.iter(|| answer(std::hint::black_box(bytes), chunk, count))
        });
        g.bench_with_input(BenchmarkId::new("mask", name), bytes, |b, bytes| {
            b.iter(|| answer(std::hint::black_box(bytes), chunk, mask))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
