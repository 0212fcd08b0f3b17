//! Certificates from a real ACME server: Debian's `pebble` (Let's Encrypt's test authority),
//! with `pebble-challtestsrv` as the DNS that points the test names at 127.0.0.1. Pebble
//! really fetches the HTTP-01 answer from the gateway (no `PEBBLE_VA_ALWAYS_VALID`).

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::support::*;

/// Processes that end with the test.
struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Pebble and its DNS, or `None` (outside CI only) when Debian's `pebble` is missing.
fn pebble_installed() -> bool {
    let here = Command::new("pebble")
        .arg("-h")
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .is_ok();
    if !here {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "pebble (Debian's package) is needed: scripts/test installs it"
        );
        eprintln!("skipped outside CI: pebble is not installed");
    }
    here
}

/// Pebble's own HTTPS: a test CA, and a certificate for 127.0.0.1 signed by it.
pub(crate) struct PebbleTls {
    ca: CertificateDer<'static>,
    pub(crate) ca_file: std::path::PathBuf,
}

pub(crate) fn pebble_tls(dir: &std::path::Path) -> PebbleTls {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pebble test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf_params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf_params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("pebble.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("pebble.key"), leaf_key.serialize_pem()).unwrap();
    let ca_file = dir.join("pebble-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    PebbleTls {
        ca: CertificateDer::from(ca.der().to_vec()),
        ca_file,
    }
}

/// Pebble and its DNS (every name at 127.0.0.1), running until dropped.
struct Pebble {
    _processes: Killed,
    management: std::net::SocketAddr,
    dns_admin: std::net::SocketAddr,
}

/// Starts pebble on `acme_port`, validating at `ip` (every name points there) on the
/// gateway's `http_port` (HTTP-01) or `https_port` (TLS-ALPN-01); its certificates last
/// `validity_s` seconds (default: 5 years). Returns once both listen.
async fn start_pebble(
    dir: &std::path::Path,
    acme_port: u16,
    (ip, http_port, https_port): (&str, u16, u16),
    validity_s: Option<u64>,
) -> Pebble {
    let management = closed_port().await;
    let dns_port = closed_port().await.port();
    let dns_admin = closed_port().await;
    let mut processes = Killed(Vec::new());
    processes.0.push(
        Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", ip, "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &dns_admin.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut config = serde_json::json!({
        "pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": management.to_string(),
            "certificate": dir.join("pebble.pem"),
            "privateKey": dir.join("pebble.key"),
            "httpPort": http_port,
            "tlsPort": https_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }
    });
    if let Some(seconds) = validity_s {
        config["pebble"]["certificateValidityPeriod"] = seconds.into();
    }
    std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
    processes.0.push(
        Command::new("pebble")
            .arg("-config")
            .arg(dir.join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            // No random sleeps before validating, no nonce refused on purpose: the test's
            // time goes to the exchange itself.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let acme: std::net::SocketAddr = format!("127.0.0.1:{acme_port}").parse().unwrap();
    for (addr, what) in [(acme, "pebble"), (dns_admin, "pebble-challtestsrv")] {
        assert!(
            eventually(Duration::from_secs(20), || async {
                tokio::net::TcpStream::connect(addr).await.is_ok()
            })
            .await,
            "{what} did not start"
        );
    }
    Pebble {
        _processes: processes,
        management,
        dns_admin,
    }
}

/// A gateway on ports of its own with one tenant, `ville.test`, taking its certificate from
/// the authority at `acme_port` (`acme_extra`: more `[acme]` lines).
async fn acme_gateway(
    directory: &str,
    tls: &PebbleTls,
    origin: std::net::SocketAddr,
    acme_extra: &str,
) -> Gw {
    let config = format!(
        r#"[[listeners]]
address = "127.0.0.1:0"

[[listeners]]
address = "127.0.0.2:0"
protocol = "https"

[acme]
directory = "{directory}"
ca_file = "{ca}"
{acme_extra}

[[tenants]]
id = "ville"
name = "Ville"
hosts = ["ville.test"]
tls = {{ acme = true }}
[[tenants.pools]]
name = "web"
servers = [{{ address = "{origin}" }}]
[[tenants.routes]]
pool = "web"
"#,
        ca = tls.ca_file.display(),
    );
    Gw::start(&config).await
}

/// The tenant's orders with `result` (`ok`, `failed`) in the metrics `m`.
fn orders_in(m: &str, tenant: &str, result: &str) -> u64 {
    m.lines()
        .find_map(|l| {
            l.strip_prefix(&format!(
                "rempart_acme_orders_total{{tenant=\"{tenant}\",result=\"{result}\"}} "
            ))
        })
        .map_or(0, |v| v.parse().unwrap())
}

/// How pebble checks the names.
enum Proof {
    /// Over HTTP-01 at the gateway's HTTP listener.
    Http,
    /// The names point at the HTTPS listener's address and pebble's HTTP-01 port is one
    /// where nothing listens: only a TLS-ALPN-01 handshake can prove them.
    TlsOnly,
}

/// A gateway for `ville.test` (`acme_extra`: more `[acme]` lines) and pebble issuing
/// certificates of `validity_s` seconds, once the first certificate is there.
struct Issued {
    gw: Gw,
    https: std::net::SocketAddr,
    /// The root of pebble's chains.
    root: CertificateDer<'static>,
    pebble: Pebble,
    /// The renewal information front, when the test has one.
    ari: Option<AriFront>,
    _origin: Origin,
    _work: tempfile::TempDir,
}

async fn first_certificate(acme_extra: &str, proof: Proof, validity_s: Option<u64>) -> Issued {
    issue_first(acme_extra, proof, validity_s, false).await
}

/// `first_certificate`, the gateway reaching pebble through an `AriFront` when `ari`.
async fn issue_first(acme_extra: &str, proof: Proof, validity_s: Option<u64>, ari: bool) -> Issued {
    let work = tempfile::tempdir().unwrap();
    let tls = pebble_tls(work.path());
    let origin = Origin::start("ville").await;
    let acme_port = closed_port().await.port();
    let front = if ari {
        Some(AriFront::start(work.path(), acme_port, &tls).await)
    } else {
        None
    };
    let directory = front.as_ref().map_or_else(
        || format!("https://127.0.0.1:{acme_port}/dir"),
        |f| format!("https://{}/dir", f.addr),
    );
    let gw = acme_gateway(&directory, &tls, origin.addr, acme_extra).await;
    let https = gw.running().listen_addrs[1];
    let checked = match proof {
        Proof::Http => (
            "127.0.0.1",
            gw.running().listen_addrs[0].port(),
            https.port(),
        ),
        Proof::TlsOnly => ("127.0.0.2", closed_port().await.port(), https.port()),
    };
    let pebble = start_pebble(work.path(), acme_port, checked, validity_s).await;
    // The authority was not there at start: a reload tries again at once.
    let (status, body) = gw.admin_reload().await;
    assert_eq!(status, 200, "{body}");
    assert!(
        eventually(Duration::from_secs(30), || async {
            orders_in(&crate::health::admin_metrics(&gw).await, "ville", "ok") == 1
        })
        .await,
        "{}",
        crate::health::admin_metrics(&gw).await
    );
    let root = pebble_root(pebble.management, &tls.ca).await;
    Issued {
        gw,
        https,
        root,
        pebble,
        ari: front,
        _origin: origin,
        _work: work,
    }
}

/// Pebble's directory with renewal information (ARI, RFC 9773), which Debian's pebble does
/// not give: an HTTPS front (pebble's certificate) serving pebble's directory with a
/// `renewalInfo` of its own, everything else going to pebble directly. It tells to renew
/// the first certificate asked about at once (a window already begun) and any later one
/// in a month, and keeps the identifiers asked about.
struct AriFront {
    addr: std::net::SocketAddr,
    asked: Arc<std::sync::Mutex<Vec<String>>>,
}

impl AriFront {
    async fn start(dir: &std::path::Path, acme_port: u16, tls: &PebbleTls) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.join("pebble.pem"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(dir.join("pebble.key")).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let asked: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let ca = tls.ca.clone();
        let seen = asked.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, ca, seen) = (acceptor.clone(), ca.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let (ca, seen) = (ca.clone(), seen.clone());
                            async move {
                                let path = req.uri().path().to_owned();
                                let answer = if path == "/dir" {
                                    match pebble_directory(acme_port, &ca).await {
                                        Some(mut d) => {
                                            d["renewalInfo"] = format!("https://{addr}/ari").into();
                                            http::Response::new(Full::new(Bytes::from(
                                                d.to_string(),
                                            )))
                                        }
                                        None => http::Response::builder()
                                            .status(502)
                                            .body(Full::new(Bytes::new()))
                                            .unwrap(),
                                    }
                                } else if let Some(id) = path.strip_prefix("/ari/") {
                                    let first = {
                                        let mut seen = seen.lock().unwrap();
                                        seen.push(id.to_owned());
                                        seen[0] == id
                                    };
                                    let now = std::time::SystemTime::now()
                                        .duration_since(std::time::UNIX_EPOCH)
                                        .unwrap()
                                        .as_secs()
                                        as i64;
                                    let (start, end) = if first {
                                        (now - 7200, now - 3600)
                                    } else {
                                        (now + 30 * 86_400, now + 31 * 86_400)
                                    };
                                    let rfc3339 = |t: i64| {
                                        let (days, secs) =
                                            (t.div_euclid(86_400), t.rem_euclid(86_400));
                                        let (y, m, d) = rempart::common::civil_from_days(days);
                                        format!(
                                            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
                                            secs / 3600,
                                            secs / 60 % 60,
                                            secs % 60
                                        )
                                    };
                                    let body = serde_json::json!({
                                        "suggestedWindow": {"start": rfc3339(start), "end": rfc3339(end)}
                                    });
                                    http::Response::builder()
                                        .header("content-type", "application/json")
                                        .header("retry-after", "21600")
                                        .body(Full::new(Bytes::from(body.to_string())))
                                        .unwrap()
                                } else {
                                    http::Response::builder()
                                        .status(404)
                                        .body(Full::new(Bytes::new()))
                                        .unwrap()
                                };
                                Ok::<_, std::convert::Infallible>(answer)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, asked }
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

/// Pebble's directory (JSON), or `None` while it is not up.
async fn pebble_directory(
    acme_port: u16,
    ca: &CertificateDer<'static>,
) -> Option<serde_json::Value> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", acme_port))
        .await
        .ok()?;
    let tls = connector(ca)
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = http::Request::get("/dir")
        .header("host", format!("127.0.0.1:{acme_port}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.ok()?;
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&body).ok()
}

/// A TLS connector trusting `root` only.
fn connector(root: &CertificateDer<'static>) -> tokio_rustls::TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    store.add(root.clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// A TLS client trusting `root`, GET `path` on `host` at `addr`: status, body and the leaf
/// certificate presented.
async fn https_get(
    addr: std::net::SocketAddr,
    host: &str,
    root: &CertificateDer<'static>,
    path: &str,
) -> Result<(u16, String, Vec<u8>), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = connector(root)
        .connect(ServerName::try_from(host.to_owned()).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        status,
        String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        leaf,
    ))
}

/// The root of the chains pebble issues (it makes a new one at each start).
async fn pebble_root(
    management: std::net::SocketAddr,
    ca: &CertificateDer<'static>,
) -> CertificateDer<'static> {
    let tcp = tokio::net::TcpStream::connect(management).await.unwrap();
    let tls = connector(ca)
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/roots/0")
        .header("host", management.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let pem = resp.into_body().collect().await.unwrap().to_bytes();
    CertificateDer::pem_slice_iter(&pem)
        .next()
        .expect("a root in /roots/0")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_gets_its_certificate_from_a_real_acme_server_and_keeps_it_across_restarts() {
    if !pebble_installed() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let tls = pebble_tls(work.path());

    // The gateway first, on ports of its own: the authority cannot be reached yet, which
    // it says, and it serves over HTTP meanwhile.
    let origin = Origin::start("ville").await;
    let acme_port = closed_port().await.port();
    let config = format!(
        r#"[[listeners]]
address = "127.0.0.1:0"

[[listeners]]
address = "127.0.0.2:0"
protocol = "https"

[acme]
directory = "https://127.0.0.1:{acme_port}/dir"
contact = "informatique@ville.test"
state_dir = "acme"
ca_file = "{ca}"

[[tenants]]
id = "ville"
name = "Ville"
hosts = ["ville.test", "www.ville.test"]
tls = {{ acme = true }}
[[tenants.pools]]
name = "web"
servers = [{{ address = "{o}" }}]
[[tenants.routes]]
pool = "web"

[[tenants]]
id = "panne"
name = "Panne"
hosts = ["panne.test"]
tls = {{ acme = true }}
[[tenants.pools]]
name = "web"
servers = [{{ address = "{o}" }}]
[[tenants.routes]]
pool = "web"
"#,
        ca = tls.ca_file.display(),
        o = origin.addr
    );
    let mut gw = Gw::start(&config).await;
    let http = gw.running().listen_addrs[0];
    let https = gw.running().listen_addrs[1];
    let c = h1_client();
    let orders = |m: &str, result: &str| orders_in(m, "ville", result);
    assert!(
        eventually(Duration::from_secs(20), || async {
            orders(&crate::health::admin_metrics(&gw).await, "failed") == 1
        })
        .await,
        "an authority that cannot be reached is not reported"
    );
    let waiting = get(&c, http, "ville.test", "/").await;
    assert_eq!(
        (waiting.status, waiting.body.as_str()),
        (200, "hello from ville")
    );

    // Then the authority, validating against the gateway's ports.
    let pebble = start_pebble(
        work.path(),
        acme_port,
        ("127.0.0.1", http.port(), https.port()),
        None,
    )
    .await;
    // panne.test points where nothing answers: its validation fails.
    let dns_admin = pebble.dns_admin;
    assert!(
        eventually(Duration::from_secs(20), || async {
            let req = http::Request::post(format!("http://{dns_admin}/add-a"))
                .header("host", dns_admin.to_string())
                .body(Full::new(Bytes::from_static(
                    br#"{"host": "panne.test.", "addresses": ["127.0.0.3"]}"#,
                )))
                .unwrap();
            h1_client()
                .request(req)
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await,
        "pebble-challtestsrv did not start"
    );
    // A reload (the operator fixed what failed) tries again at once.
    let started = Instant::now();
    let (status, body) = gw.admin_reload().await;
    assert_eq!(status, 200, "{body}");
    assert!(
        eventually(Duration::from_secs(30), || async {
            orders(&crate::health::admin_metrics(&gw).await, "ok") == 1
        })
        .await,
        "no certificate (last failure: {:?}): {}",
        gw.running().gateway.current().acme.last_failure("ville"),
        crate::health::admin_metrics(&gw).await
    );
    let took = started.elapsed();
    eprintln!(
        "first certificate {} ms after the authority was reachable",
        took.as_millis()
    );

    let root = pebble_root(pebble.management, &tls.ca).await;
    for host in ["ville.test", "www.ville.test"] {
        let (status, body, leaf) = https_get(https, host, &root, "/").await.unwrap();
        assert_eq!((status, body.as_str()), (200, "hello from ville"));
        let facts = rempart::config::certificate::CertificateFacts::read(&leaf).unwrap();
        assert!(facts.covers("ville.test") && facts.covers("www.ville.test"));
    }
    // The tenant whose validation failed: counted, tried again later, still on HTTP; the
    // other tenant's certificate was not held up by it.
    assert!(
        eventually(Duration::from_secs(30), || async {
            orders_in(&crate::health::admin_metrics(&gw).await, "panne", "failed") == 2
        })
        .await
    );
    let plain = get(&c, http, "panne.test", "/").await;
    assert_eq!(
        (plain.status, plain.body.as_str()),
        (200, "hello from ville")
    );
    assert!(!gw.dir.path().join("acme/panne/cert.pem").exists());
    // Now HTTPS by default.
    let redirected = get(&c, http, "ville.test", "/").await;
    assert_eq!(redirected.status, 308);
    let m = crate::health::admin_metrics(&gw).await;
    assert!(
        m.contains("rempart_tls_certificate_expiry_timestamp_seconds{tenant=\"ville\"}"),
        "{m}"
    );
    // The account and the key are the gateway's alone.
    let state = gw.dir.path().join("acme");
    for file in ["account.json", "ville/key.pem"] {
        let mode = std::fs::metadata(state.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }

    // A restart serves the stored certificate at once, without a new order.
    gw.restart().await;
    let https = gw.running().listen_addrs[1];
    assert!(
        eventually(Duration::from_secs(10), || async {
            https_get(https, "ville.test", &root, "/").await.is_ok()
        })
        .await
    );
    let m = crate::health::admin_metrics(&gw).await;
    assert_eq!(orders(&m, "ok"), 0, "{m}");
    assert_eq!(orders(&m, "failed"), 0, "{m}");
    // The tenant without a certificate is tried again by the new process, and fails again.
    assert!(
        eventually(Duration::from_secs(30), || async {
            orders_in(&crate::health::admin_metrics(&gw).await, "panne", "failed") == 1
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_certificate_is_renewed_without_a_failed_handshake() {
    if !pebble_installed() {
        return;
    }
    // Certificates of 12 seconds: renewed 8 seconds in, 4 before they end.
    let issued = first_certificate("", Proof::Http, Some(12)).await;
    let (gw, https, root) = (&issued.gw, issued.https, &issued.root);
    let ok_orders = |m: String| orders_in(&m, "ville", "ok");

    // Residents keep connecting while the certificate is replaced: every handshake
    // succeeds, and they see the new certificate once it is there.
    let mut leaves = std::collections::HashSet::new();
    let mut failed = Vec::new();
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    let deadline = Instant::now() + Duration::from_secs(40);
    while Instant::now() < deadline {
        pace.tick().await;
        match https_get(https, "ville.test", root, "/").await {
            Ok((200, _, leaf)) => {
                leaves.insert(leaf);
            }
            other => failed.push(format!("{:?}", other.map(|(s, b, _)| (s, b)))),
        }
        if leaves.len() >= 2 && ok_orders(crate::health::admin_metrics(gw).await) >= 2 {
            break;
        }
    }
    assert!(failed.is_empty(), "{failed:?}");
    assert!(leaves.len() >= 2, "the certificate was not renewed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_01_proves_the_names_on_the_https_listener_alone() {
    if !pebble_installed() {
        return;
    }
    let issued = first_certificate("challenge = \"tls-alpn-01\"", Proof::TlsOnly, None).await;
    let (status, body, _) = https_get(issued.https, "ville.test", &issued.root, "/")
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "hello from ville"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authority_down_at_renewal_leaves_the_current_certificate_serving() {
    if !pebble_installed() {
        return;
    }
    // Certificates of 20 seconds: due for renewal 13 seconds in.
    let issued = first_certificate("", Proof::Http, Some(20)).await;
    let (gw, https, root) = (&issued.gw, issued.https, &issued.root);
    let orders = |m: &str, result: &str| orders_in(m, "ville", result);
    let (_, _, first) = https_get(https, "ville.test", root, "/").await.unwrap();
    let failed_before = orders(&crate::health::admin_metrics(gw).await, "failed");
    // The authority goes away before the renewal is due.
    drop(issued.pebble);
    assert!(
        eventually(Duration::from_secs(30), || async {
            orders(&crate::health::admin_metrics(gw).await, "failed") > failed_before
        })
        .await,
        "the failed renewal is not counted"
    );
    // Still served, with the certificate it has (valid a few seconds more).
    let (status, body, leaf) = https_get(https, "ville.test", root, "/")
        .await
        .expect("the current certificate no longer serves");
    assert_eq!((status, body.as_str()), (200, "hello from ville"));
    assert_eq!(leaf, first);
}

/// The authority's renewal information (ARI) moves a renewal forward: five-year
/// certificates, and a front giving pebble's directory a `renewalInfo` that says to renew
/// the first one now. The gateway asks about it as soon as it has it, renews at once (long
/// before two thirds of five years), serves the new certificate, asks about that one too,
/// and orders nothing more (its window is a month away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authoritys_renewal_information_brings_a_renewal_forward() {
    if !pebble_installed() {
        return;
    }
    let issued = issue_first("", Proof::Http, None, true).await;
    let (gw, https, root) = (&issued.gw, issued.https, &issued.root);
    let front = issued.ari.as_ref().unwrap();
    let failed = orders_in(&crate::health::admin_metrics(gw).await, "ville", "failed");
    let ok_orders = |m: String| orders_in(&m, "ville", "ok");
    assert!(
        eventually(Duration::from_secs(30), || async {
            ok_orders(crate::health::admin_metrics(gw).await) == 2 && front.asked().len() >= 2
        })
        .await,
        "no renewal from the renewal information: asked {:?}\n{}",
        front.asked(),
        crate::health::admin_metrics(gw).await
    );
    let asked = front.asked();
    // Identifiers as RFC 9773 writes them: base64url key identifier, a dot, the serial.
    assert!(
        asked.iter().all(|id| {
            let (aki, serial) = id.split_once('.').unwrap_or_default();
            !aki.is_empty()
                && !serial.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        }),
        "{asked:?}"
    );
    assert_ne!(
        asked[0],
        asked[asked.len() - 1],
        "the same certificate asked about twice"
    );
    // The new certificate serves; nothing more is ordered.
    let (status, _, _) = https_get(https, "ville.test", root, "/").await.unwrap();
    assert_eq!(status, 200);
    let m = crate::health::admin_metrics(gw).await;
    assert_eq!(
        (ok_orders(m.clone()), orders_in(&m, "ville", "failed")),
        (2, failed),
        "{m}"
    );
}

/// Cluster mode: one node orders for all. a holds the renewal lease and orders; the
/// authority checks the names on b (the names point there), which answers with a's proof;
/// both serve the certificate, and b never ordered one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_one_node_orders_and_every_node_serves() {
    if !pebble_installed() || !crate::cluster::redis_installed() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let tls = pebble_tls(work.path());
    let origin = Origin::start("ville").await;
    let acme_port = closed_port().await.port();
    let redis_port = closed_port().await.port();
    let _redis = crate::cluster::Redis::start(redis_port).await;
    let cluster_node = |name: &'static str| {
        format!("\n[cluster]\nredis = \"redis://127.0.0.1:{redis_port}/0\"\nnode = \"{name}\"\n")
    };
    let status = |gw: &Gw| {
        let admin = gw.running().admin_addr;
        let token = gw.token.clone();
        async move {
            let req = http::Request::get(format!("http://{admin}/admin/cluster"))
                .header("host", admin.to_string())
                .header("authorization", format!("Bearer {token}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = h1_client().request(req).await.unwrap();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()
        }
    };
    let directory = format!("https://127.0.0.1:{acme_port}/dir");
    let a = acme_gateway(&directory, &tls, origin.addr, &cluster_node("a")).await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            status(&a).await["acme_lease"] == true
        })
        .await,
        "a never took the renewal lease"
    );
    let b = acme_gateway(&directory, &tls, origin.addr, &cluster_node("b")).await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            status(&b).await["degraded"] == false
        })
        .await
    );
    assert_eq!(status(&b).await["acme_lease"], false);
    // The authority reaches b only.
    let b_http = b.running().listen_addrs[0];
    let b_https = b.running().listen_addrs[1];
    let pebble = start_pebble(
        work.path(),
        acme_port,
        ("127.0.0.1", b_http.port(), b_https.port()),
        None,
    )
    .await;
    // a may have tried while the authority was down (an attempt may even be under way as
    // it starts): what counts is that an order succeeds, with b answering the proof.
    let failed_before = orders_in(&crate::health::admin_metrics(&a).await, "ville", "failed");
    let (code, body) = a.admin_reload().await;
    assert_eq!(code, 200, "{body}");
    let acme_lines = |m: String| {
        m.lines()
            .filter(|l| l.contains("acme") || l.contains("cluster"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        eventually(Duration::from_secs(30), || async {
            orders_in(&crate::health::admin_metrics(&a).await, "ville", "ok") == 1
        })
        .await,
        "no certificate on a; its figures:\n{}\nits cluster: {}\nb's figures:\n{}",
        acme_lines(crate::health::admin_metrics(&a).await),
        status(&a).await,
        acme_lines(crate::health::admin_metrics(&b).await),
    );
    eprintln!(
        "orders that failed on a: {failed_before} before the authority started, {} in all",
        orders_in(&crate::health::admin_metrics(&a).await, "ville", "failed")
    );
    let root = pebble_root(pebble.management, &tls.ca).await;
    let a_https = a.running().listen_addrs[1];
    let served_by = |addr| {
        let root = root.clone();
        async move { https_get(addr, "ville.test", &root, "/").await }
    };
    assert!(
        eventually(Duration::from_secs(15), || async {
            served_by(b_https).await.is_ok()
        })
        .await,
        "b does not serve the certificate a obtained"
    );
    let (status_a, _, leaf_a) = served_by(a_https).await.unwrap();
    let (status_b, body_b, leaf_b) = served_by(b_https).await.unwrap();
    assert_eq!((status_a, status_b), (200, 200));
    assert_eq!(body_b, "hello from ville");
    assert_eq!(leaf_a, leaf_b, "the nodes serve different certificates");
    let m = crate::health::admin_metrics(&b).await;
    assert_eq!(
        (
            orders_in(&m, "ville", "ok"),
            orders_in(&m, "ville", "failed")
        ),
        (0, 0),
        "b ordered: {m}"
    );
}
