//! The path checked is the path served: routes match the normalised path, and the
//! normalised path is what the origin receives. Empty and dot segments, encoded letters and
//! encoded slashes never reach a protected route's content through another route.

use super::{h1_status, h2_status};
use crate::support::*;

/// A tenant with a key-protected `/admin`, a `/ferme` in maintenance, and `/fichiers`,
/// which allows encoded slashes.
async fn gateway(origin: &Origin) -> Gw {
    let keys = "2534b85a918523e962bfcd66aca18e28284889b02660197f447beb1d1b5c52c1\n";
    let config = format!(
        "{}
[[tenants.routes]]
name = \"admin\"
path_prefix = \"/admin\"
pool = \"web\"
api_key_header = \"X-Api-Key\"
api_keys_file = \"keys.txt\"

[[tenants.routes]]
name = \"ferme\"
path_prefix = \"/ferme\"
pool = \"web\"
maintenance = true

[[tenants.routes]]
name = \"fichiers\"
path_prefix = \"/fichiers\"
pool = \"web\"
allow_encoded_slash = true
",
        one_tenant(&[origin.addr], "", "")
    );
    Gw::start_with_files(&config, &[("keys.txt", keys)], quiet_options()).await
}

/// Other spellings of `/admin/x` and `/ferme/x`: each must meet the protected route.
const DISGUISES: &[(&str, u16)] = &[
    ("//admin/x", 401),
    ("/./admin/x", 401),
    ("/public/../admin/x", 401),
    ("/%61dmin/x", 401),
    ("/%2e/admin/x", 401),
    ("/public/%2e%2e/admin/x", 401),
    ("/admin//x", 401),
    ("///ferme", 503),
    ("/x/../ferme/y", 503),
    ("/%66erme/", 503),
];

/// Spellings with no safe reading: refused before routing (or by the route reached).
const REFUSED: &[&str] = &[
    "/../admin/x",
    "/%2e%2e/admin/x",
    "/a/../../admin",
    "/admin%2Fx",
    "/public/..%2Fadmin/x",
    "/public/..%5Cadmin/x",
    "/..;/admin/x",
    "/public/a%00",
    "/%c0%ae%c0%ae/admin",
    "/%zz",
];

#[tokio::test]
async fn disguised_paths_meet_the_route_they_name_on_h1_and_h2() {
    let origin = Origin::start("a").await;
    let gw = gateway(&origin).await;
    for (path, want) in DISGUISES {
        assert_eq!(
            h1_status(gw.addr, "GET", path, "ville.test").await,
            *want,
            "h1 {path}"
        );
        let uri = format!("http://ville.test{path}");
        assert_eq!(
            h2_status(gw.addr, "GET", &uri, &[]).await,
            Some(*want),
            "h2 {path}"
        );
    }
    for path in REFUSED {
        assert_eq!(
            h1_status(gw.addr, "GET", path, "ville.test").await,
            400,
            "h1 {path}"
        );
        let uri = format!("http://ville.test{path}");
        // hyper's HTTP/2 client may refuse to send some of them: then nothing was served.
        let h2 = h2_status(gw.addr, "GET", &uri, &[]).await;
        assert!(h2.is_none() || h2 == Some(400), "h2 {path}: {h2:?}");
    }
    assert_eq!(origin.count(), 0, "{:?}", origin.seen());
}

#[tokio::test]
async fn the_origin_receives_the_normalised_path() {
    let origin = Origin::start("a").await;
    let gw = gateway(&origin).await;
    let cases = [
        (
            "/a//b/./c/%7Euser/%c3%a9?x=%2e&y=..",
            "/a/b/c/~user/%C3%A9?x=%2e&y=..",
        ),
        ("/a/b/../c/", "/a/c/"),
        ("/fichiers/a%2fb", "/fichiers/a%2Fb"),
        ("/plain/path?q=1", "/plain/path?q=1"),
    ];
    for (sent, _) in cases {
        assert_eq!(
            h1_status(gw.addr, "GET", sent, "ville.test").await,
            200,
            "{sent}"
        );
        let uri = format!("http://ville.test{sent}");
        assert_eq!(
            h2_status(gw.addr, "GET", &uri, &[]).await,
            Some(200),
            "{sent}"
        );
    }
    let seen = origin.seen();
    let want: Vec<String> = cases
        .iter()
        .flat_map(|(_, forwarded)| {
            [
                format!("ville.test {forwarded}"),
                format!("ville.test {forwarded}"),
            ]
        })
        .collect();
    assert_eq!(seen, want);
}
