//! `rempart demo`: a demo origin serving two fictional municipalities and the gateway in
//! front of it, on loopback only, with an embedded configuration written to a temporary
//! directory so that `reload` and `check` can be tried on it.

pub mod backoffice;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::Form;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

fn site(headers: &HeaderMap) -> (&'static str, &'static str) {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if host.starts_with("agglo.") {
        ("Communauté d'agglomération de l'Estuaire", "agglo")
    } else {
        ("Ville de Saint-Exemple", "ville")
    }
}

fn page(title: &str, site_name: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"fr\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · {site_name}</title><style>body{{font:1rem/1.5 system-ui,sans-serif;max-width:44rem;margin:0 auto;padding:1rem}}\
header{{border-bottom:3px solid #000091;margin-bottom:1rem}}nav a{{margin-right:1rem}}label{{display:block;margin-top:.6rem}}</style></head>\
<body><header><p><strong>{site_name}</strong></p><nav><a href=\"/\">Accueil</a><a href=\"/etat-civil\">État civil</a>\
<a href=\"/inscription-scolaire\">Inscription scolaire</a><a href=\"/lent\">Page lente</a><a href=\"/erreur\">Page en erreur</a></nav></header>\
<main><h1>{title}</h1>{body}</main><footer><p>Site de démonstration de Rempart : aucune donnée n'est conservée.</p></footer></body></html>"
    ))
}

async fn home(headers: HeaderMap) -> Html<String> {
    let (name, kind) = site(&headers);
    let news = if kind == "agglo" {
        "<p>Collecte des déchets : les jours de ramassage restent inchangés cette semaine.</p><p>Transports : le réseau de bus fonctionne normalement.</p>"
    } else {
        "<p>La mairie est ouverte du lundi au vendredi de 8 h 30 à 17 h.</p><p>Conseil municipal : jeudi à 18 h, salle des fêtes.</p>"
    };
    page("Accueil", name, news)
}

async fn etat_civil(headers: HeaderMap) -> Html<String> {
    let (name, _) = site(&headers);
    page(
        "Demande d'acte d'état civil",
        name,
        "<form method=\"post\" action=\"/etat-civil\"><label for=\"acte\">Type d'acte</label>\
<select id=\"acte\" name=\"acte\"><option>Naissance</option><option>Mariage</option><option>Décès</option></select>\
<label for=\"nom\">Nom</label><input id=\"nom\" name=\"nom\" autocomplete=\"family-name\">\
<label for=\"prenom\">Prénom</label><input id=\"prenom\" name=\"prenom\" autocomplete=\"given-name\">\
<p><button type=\"submit\">Envoyer la demande</button></p></form>",
    )
}

#[derive(serde::Deserialize)]
struct Demande {
    acte: String,
}

async fn etat_civil_post(headers: HeaderMap, Form(d): Form<Demande>) -> Html<String> {
    let (name, _) = site(&headers);
    let acte = d
        .acte
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ')
        .take(20)
        .collect::<String>();
    page("Demande enregistrée", name, &format!("<p>Votre demande d'acte ({acte}) est enregistrée. Vous recevrez une réponse sous 10 jours.</p>"))
}

async fn inscription(headers: HeaderMap) -> Html<String> {
    let (name, _) = site(&headers);
    page(
        "Inscription scolaire",
        name,
        "<form method=\"post\" action=\"/etat-civil\"><input type=\"hidden\" name=\"acte\" value=\"Inscription\">\
<label for=\"enfant\">Nom de l'enfant</label><input id=\"enfant\" name=\"enfant\">\
<label for=\"ecole\">École</label><select id=\"ecole\" name=\"ecole\"><option>École Jules-Ferry</option><option>École des Dunes</option></select>\
<p><button type=\"submit\">Inscrire</button></p></form>",
    )
}

async fn lent(headers: HeaderMap) -> Html<String> {
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (name, _) = site(&headers);
    page(
        "Page lente",
        name,
        "<p>Cette page a mis trois secondes à être produite.</p>",
    )
}

async fn erreur() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "erreur interne de l'application métier\n",
    )
        .into_response()
}

/// The demo origin's router (also used by tests and benchmarks).
pub fn origin_router() -> Router {
    Router::new()
        .route("/", get(home))
        .route("/etat-civil", get(etat_civil).post(etat_civil_post))
        .route("/inscription-scolaire", get(inscription))
        .route("/lent", get(lent))
        .route("/erreur", get(erreur))
        .route("/healthz", get(|| async { "ok" }))
}

/// Starts the demo origin on an ephemeral loopback port.
pub async fn start_origin() -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, origin_router()).await;
    });
    Ok(addr)
}

/// The embedded demo configuration (`backoffice`: the agents' application).
pub fn config_text(origin: SocketAddr, backoffice: SocketAddr, port: u16) -> String {
    format!(
        r#"# Rempart demo configuration (generated by `rempart demo`).
default_tenant = "saint-exemple"

[[listeners]]
name = "demo-http"
address = "127.0.0.1:{port}"

[admin]
address = "127.0.0.1:0"
token_file = "admin.token"

[timeouts]
upstream_response_head = "10s"
shutdown_drain = "5s"

# Status pages: history in SQLite next to this file, a static copy written after every
# change (an operator would add a publish_command copying it to another provider).
[status]
export_dir = "statut-copie"

[[tenants]]
id = "saint-exemple"
name = "Ville de Saint-Exemple"
hosts = ["saint-exemple.localhost", "www.saint-exemple.localhost"]
contact = "Accueil de la mairie : 02 00 00 00 00, du lundi au vendredi de 8 h 30 à 17 h"

[[tenants.pools]]
name = "web"
servers = [{{ address = "{origin}" }}]
health = {{ path = "/healthz", interval = "2s" }}

[[tenants.routes]]
path_prefix = "/"
pool = "web"

[[tenants.routes]]
name = "lent"
path_prefix = "/lent"
pool = "web"
timeouts = {{ upstream_response_head = "2s" }}

[[tenants.routes]]
name = "etat-civil"
path_prefix = "/etat-civil"
pool = "web"

[[tenants.routes]]
name = "inscription-scolaire"
path_prefix = "/inscription-scolaire"
pool = "web"

[tenants.status]
hosts = ["statut.saint-exemple.localhost"]
debounce = "10s"
alternatives = ["Accueil de la mairie : 02 00 00 00 00, du lundi au vendredi de 8 h 30 à 17 h"]

[[tenants.status.components]]
id = "site"
name = "Site de la ville"
name_en = "Town website"
routes = ["/"]

[[tenants.status.components]]
id = "etat-civil"
name = "Demandes d'actes d'état civil"
name_en = "Civil registry requests"
routes = ["etat-civil"]

[[tenants.status.components]]
id = "ecoles"
name = "Inscriptions scolaires"
name_en = "School registration"
routes = ["inscription-scolaire"]

# The agents' back-office application: every answer that leaves it is counted per agent.
[[tenants]]
id = "agents"
name = "Portail des agents"
hosts = ["agents.saint-exemple.localhost"]
contact = "Référent sécurité : 02 00 00 00 09"

[tenants.guard]
accounts = [{{ basic = true }}]

[[tenants.pools]]
name = "app"
servers = [{{ address = "{backoffice}" }}]

[[tenants.routes]]
path_prefix = "/"
pool = "app"

[[tenants.routes]]
name = "usagers"
path_prefix = "/api/usagers"
pool = "app"

[tenants.routes.guard]
record_header = "X-Record-Count"
json_records = "data"
record_ids = ["/api/usagers/{{id}}"]
budgets = [
  {{ records = 100, per = "1h", action = "alert" }},
  {{ records = 300, per = "1h", action = "block" }},
  {{ records = 1500, per = "24h", action = "suspend" }},
]

[[tenants.routes]]
name = "export"
path_prefix = "/api/export.csv"
pool = "app"

[tenants.routes.guard]
count_persons = true
pii_mask = ["nir", "iban"]
budgets = [{{ records = 300, per = "1h", action = "block" }}]

[[tenants.routes]]
name = "debug"
path_prefix = "/debug"
pool = "app"

[tenants.routes.guard]
pii_block = ["nir", "iban", "card"]

[[tenants]]
id = "agglo"
name = "Communauté d'agglomération de l'Estuaire"
hosts = ["agglo.localhost"]
contact = "Standard : 02 00 00 00 01"

[[tenants.pools]]
name = "web"
servers = [{{ address = "{origin}" }}]
health = {{ path = "/healthz", interval = "2s" }}

[[tenants.routes]]
path_prefix = "/"
pool = "web"
"#
    )
}

/// Runs the demo until Ctrl-C.
pub async fn run(port: u16) -> anyhow::Result<()> {
    let origin = start_origin().await?;
    let backoffice = backoffice::start().await?;
    let dir = std::env::temp_dir().join(format!("rempart-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let token = random_token();
    write_private(&dir.join("admin.token"), &token)?;
    // Port 8080 when free, an ephemeral port otherwise.
    let port = if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
        port
    } else {
        0
    };
    let config_path: PathBuf = dir.join("rempart.toml");
    std::fs::write(&config_path, config_text(origin, backoffice, port))?;
    let running = crate::app::start(&config_path, crate::app::Options::default()).await?;
    let addr = running.listen_addrs[0];
    let p = addr.port();
    println!();
    println!("Rempart demo is running (loopback only). Open:");
    println!("  Ville de Saint-Exemple        http://saint-exemple.localhost:{p}/");
    println!("  Communauté d'agglomération    http://agglo.localhost:{p}/");
    println!("  Slow page (gateway 504)       http://saint-exemple.localhost:{p}/lent");
    println!("  Failing page (origin 500)     http://saint-exemple.localhost:{p}/erreur");
    println!("  Unknown host (default tenant) http://127.0.0.1:{p}/");
    println!("  Status page                   http://statut.saint-exemple.localhost:{p}/");
    println!("                                http://saint-exemple.localhost:{p}/statut/ (feed.atom, summary.json)");
    println!(
        "  Status page, static copy      {}",
        dir.join("statut-copie").display()
    );
    println!("  Agents' portal (data guard)   http://agents.saint-exemple.localhost:{p}/api/usagers?page=1&per_page=50");
    println!("                                (any Basic user: curl -u agent:x ...; 300 records an hour, then 403)");
    println!("                                /api/export.csv?n=20 (NIR and IBAN masked), /debug (cut before a NIR)");
    println!("  Demo origin, direct           http://{origin}/");
    println!(
        "Admin API: http://{}/metrics  (Authorization: Bearer {token})",
        running.admin_addr
    );
    println!(
        "           http://{}/admin/guard/accounts  (what each agent took)",
        running.admin_addr
    );
    println!(
        "Config: {}  (edit it: Rempart reloads on save)",
        config_path.display()
    );
    println!("Press Ctrl-C to stop.");
    println!();
    crate::app::termination_signal().await;
    println!("Stopping: draining connections...");
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// 32 random bytes as hex.
pub fn random_token() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // SystemRandom only fails without a kernel RNG; refuse to invent a weak token.
        return String::new();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}
