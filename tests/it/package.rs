//! The Debian package, as an administrator meets it: built by `scripts/package` (whose path
//! the test command passes in `REMPART_TEST_DEB`), installed with dpkg into a throw-away root
//! (`dpkg --root --force-script-chrootless`: the maintainer scripts run with `DPKG_ROOT`,
//! the machine's own files are never touched), started from there as its system user against
//! a loopback origin, upgraded, removed and purged. There is no systemd as PID 1 here: the
//! unit is checked with `systemd-analyze verify` and `security`, and the binary's side of
//! `Type=notify` is spoken to through a real notify socket.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::*;

/// The package under test, or `None` (outside CI only) with the reason said.
fn package() -> Option<PathBuf> {
    let missing = |msg: String| {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("skipped outside CI: {msg}");
        None
    };
    let Some(deb) = std::env::var_os("REMPART_TEST_DEB") else {
        return missing("REMPART_TEST_DEB is not set: run scripts/test, which builds the package with scripts/package".into());
    };
    let uid = run(Command::new("id").arg("-u"));
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return missing("installing into a throw-away root with dpkg needs root".into());
    }
    Some(PathBuf::from(deb))
}

/// Runs `cmd` with the system directories on PATH (dpkg calls ldconfig and friends); panics
/// with its output unless it succeeds.
fn run(cmd: &mut Command) -> Output {
    let path = std::env::var("PATH").unwrap_or_default();
    cmd.env("PATH", format!("/usr/sbin:/usr/bin:/sbin:/bin:{path}"))
        .stdin(Stdio::null());
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `dpkg --root=ROOT` with the maintainer scripts run outside a chroot.
fn dpkg(root: &Path, args: &[&str]) -> Output {
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--log=/dev/null",
        ])
        .args(args))
}

/// The numeric id of `name` in the root's `file` (`etc/passwd` or `etc/group`).
fn id_in(root: &Path, file: &str, name: &str) -> u32 {
    let entries = std::fs::read_to_string(root.join(file)).unwrap();
    entries
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(name)).then(|| f.nth(1).unwrap().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no {name} in {file}:\n{entries}"))
}

/// The same package at another version (an upgrade to install over the first).
fn repackaged(deb: &Path, version: &str, dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    run(Command::new("dpkg-deb").arg("-R").arg(deb).arg(&tree));
    let control = tree.join("DEBIAN/control");
    let old = std::fs::read_to_string(&control).unwrap();
    let new: String = old
        .lines()
        .map(|l| {
            if l.starts_with("Version: ") {
                format!("Version: {version}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert_ne!(old, new);
    std::fs::write(&control, new).unwrap();
    let out = dir.join(format!("rempart_{version}.deb"));
    run(Command::new("dpkg-deb")
        .arg("--root-owner-group")
        .arg("-b")
        .arg(&tree)
        .arg(&out));
    out
}

/// A gateway that ends with the test, even a failed one.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn the_package_holds_the_daemon_its_unit_pages_completions_and_contrib() {
    let Some(deb) = package() else { return };
    let listing = text(&run(Command::new("dpkg-deb").arg("-c").arg(&deb)));
    for path in [
        "./usr/bin/rempart",
        "./etc/rempart/rempart.toml",
        "./usr/lib/systemd/system/rempart.service",
        "./usr/lib/sysusers.d/rempart.conf",
        "./usr/lib/tmpfiles.d/rempart.conf",
        "./usr/share/man/man8/rempart.8.gz",
        "./usr/share/man/man8/rempart-run.8.gz",
        "./usr/share/man/man8/rempart-watch-incident-ack.8.gz",
        "./usr/share/bash-completion/completions/rempart",
        "./usr/share/zsh/vendor-completions/_rempart",
        "./usr/share/doc/rempart/operations.md",
        "./usr/share/doc/rempart/config.md",
        "./usr/share/doc/rempart/copyright",
        "./usr/share/rempart/prometheus/rempart-rules.yml",
        "./usr/share/rempart/grafana/rempart.json",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(&format!(" {path}"))),
            "{path} is not in the package:\n{listing}"
        );
    }
    // Nothing under the state directories: they are made at installation, never shipped
    // (an upgrade must not touch them).
    assert!(!listing.contains("./var/"), "{listing}");
    let conffiles = text(&run(Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .arg("conffiles")));
    assert_eq!(conffiles.trim(), "/etc/rempart/rempart.toml");
    let control = text(&run(Command::new("dpkg-deb").arg("-f").arg(&deb)));
    assert!(control.contains("Section: net"), "{control}");
    assert!(
        control.contains("Depends: ") && control.contains("libc6"),
        "{control}"
    );
    // A stripped binary: a server does not carry line tables.
    let size = text(&run(Command::new("dpkg-deb").arg("-I").arg(&deb)));
    let installed_kib: u64 = size
        .lines()
        .find_map(|l| l.trim().strip_prefix("Installed-Size: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(installed_kib < 40_000, "{installed_kib} KiB installed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_package_installs_into_a_throw_away_root_runs_upgrades_and_purges() {
    let Some(deb) = package() else { return };
    let work = tempfile::tempdir().unwrap();
    // The rempart user must reach the root's files, as it would reach /.
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = work.path().join("root");
    for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();

    // Installation: the user, the state directories, the secrets, the unit enabled.
    let installed = text(&dpkg(&root, &["-i", deb.to_str().unwrap()]));
    assert!(installed.contains("Setting up rempart"), "{installed}");
    let uid = id_in(&root, "etc/passwd", "rempart");
    let gid = id_in(&root, "etc/group", "rempart");
    assert_ne!(uid, 0);
    let etc = root.join("etc/rempart");
    let mut secrets = Vec::new();
    for secret in ["admin.token", "pass.keys", "guard.key"] {
        let meta = std::fs::metadata(etc.join(secret)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600, "{secret}");
        assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{secret}");
        let value = std::fs::read_to_string(etc.join(secret)).unwrap();
        assert_eq!(value.trim().len(), 64, "{secret}: 32 random bytes in hex");
        secrets.push(value);
    }
    assert_ne!(secrets[0], secrets[1]);
    let meta = std::fs::metadata(root.join("var/lib/rempart")).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.mode() & 0o777, 0o750);
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));
    assert!(root
        .join("etc/systemd/system/multi-user.target.wants/rempart.service")
        .symlink_metadata()
        .is_ok());

    // The unit: valid for this systemd (unknown keys, missing commands and the man page of
    // `Documentation=` are reported) and sandboxed to an exposure of at most 2.0.
    let verify_root = work.path().join("verify");
    run(Command::new("cp").arg("-a").arg(&root).arg(&verify_root));
    // What a real root has that the throw-away one lacks: the system's units and kill(1).
    run(Command::new("cp")
        .args(["-rn", "/usr/lib/systemd/system/."])
        .arg(verify_root.join("usr/lib/systemd/system")));
    std::fs::create_dir_all(verify_root.join("bin")).unwrap();
    run(Command::new("cp")
        .arg(std::fs::canonicalize("/bin/kill").unwrap())
        .arg(verify_root.join("bin/kill")));
    let verified = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", verify_root.display()))
        .arg("rempart.service")
        .env("MANPATH", verify_root.join("usr/share/man"))
        .current_dir(work.path()));
    assert_eq!(text(&verified).trim(), "", "systemd-analyze verify");
    let security = text(&run(Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(format!("--root={}", root.display()))
        .arg("rempart.service")
        .current_dir(work.path())));
    let exposure: f64 = security
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for rempart.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{security}"))
        .parse()
        .unwrap();
    assert!(exposure <= 2.0, "exposure {exposure}:\n{security}");

    // The manual renders without a warning and says where things are.
    let page = run(Command::new("man")
        .args(["--warnings", "-l"])
        .arg(root.join("usr/share/man/man8/rempart.8.gz"))
        .env("MANWIDTH", "100"));
    assert_eq!(
        String::from_utf8_lossy(&page.stderr).trim(),
        "",
        "man warnings"
    );
    let page = String::from_utf8_lossy(&page.stdout);
    for said in [
        "SIGHUP",
        "/etc/rempart/admin.token",
        "/var/lib/rempart/",
        "rempart-run(8)",
    ] {
        assert!(page.contains(said), "{said} not in rempart(8):\n{page}");
    }
    // bash loads the completion and knows the commands.
    let completion = root.join("usr/share/bash-completion/completions/rempart");
    let words = text(&run(Command::new("bash").arg("-c").arg(format!(
        "source '{}' && COMP_WORDS=(rempart s) COMP_CWORD=1 && _rempart rempart s rempart && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        completion.display()
    ))));
    assert!(
        words.lines().any(|w| w == "status") && words.lines().any(|w| w == "shield"),
        "{words}"
    );
    let zsh =
        std::fs::read_to_string(root.join("usr/share/zsh/vendor-completions/_rempart")).unwrap();
    assert!(zsh.starts_with("#compdef rempart"));

    // The shipped configuration passes `rempart check` as installed.
    let binary = root.join("usr/bin/rempart");
    let shipped = etc.join("rempart.toml");
    run(Command::new(&binary)
        .args(["check", "--config"])
        .arg(&shipped));

    // Started from the root as its user: the shipped file with loopback addresses, the
    // state under the root. Every replaced text must be in the shipped file.
    let origin = Origin::start("commune").await;
    let port = closed_port().await.port();
    let admin_port = closed_port().await.port();
    let mut loopback = std::fs::read_to_string(&shipped).unwrap();
    for (from, to) in [
        ("\"0.0.0.0:80\"", format!("\"127.0.0.1:{port}\"")),
        ("\"127.0.0.1:9180\"", format!("\"127.0.0.1:{admin_port}\"")),
        ("\"127.0.0.1:8080\"", format!("\"{}\"", origin.addr)),
        (
            "\"/var/lib/rempart/",
            format!("\"{}/", root.join("var/lib/rempart").display()),
        ),
    ] {
        assert!(loopback.contains(from), "{from} is not in the shipped file");
        loopback = loopback.replace(from, &to);
    }
    let config = etc.join("loopback.toml");
    std::fs::write(&config, loopback).unwrap();
    let socket_path = work.path().join("notify.sock");
    let manager = tokio::net::UnixDatagram::bind(&socket_path).unwrap();
    std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let child = KillOnDrop(Some(
        Command::new(&binary)
            .args(["run", "--config"])
            .arg(&config)
            .uid(uid)
            .gid(gid)
            .env("NOTIFY_SOCKET", &socket_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    ));
    let pid = child.0.as_ref().unwrap().id().to_string();
    let ready = crate::process::notified(&manager, "READY=1").await;
    assert!(ready.contains(&format!("127.0.0.1:{port}")), "{ready}");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let c = h1_client();
    let got = get(&c, addr, "www.ma-commune.fr", "/").await;
    assert_eq!((got.status, got.body.as_str()), (200, "hello from commune"));
    let status_page = get(&c, addr, "www.ma-commune.fr", "/statut/").await;
    assert_eq!(status_page.status, 200);
    assert!(status_page.body.contains("Site de la ville"));
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let token = secrets[0].trim().to_owned();
    let metrics = get_with(
        &c,
        admin,
        &admin.to_string(),
        "/metrics",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    assert!(metrics
        .body
        .contains("rempart_requests_total{tenant=\"ma-commune\""));
    // The static copy of the status site, written as the gateway's user.
    let export = root.join("var/lib/rempart/statut/ma-commune/index.html");
    assert!(
        eventually(std::time::Duration::from_secs(20), || async {
            std::fs::metadata(&export).is_ok_and(|m| m.uid() == uid)
        })
        .await,
        "no {}",
        export.display()
    );
    // `rempart reload` as the administrator, with the token made at installation.
    run(Command::new(&binary)
        .args(["reload", "--config"])
        .arg(&config));
    run(Command::new("kill").args(["-TERM", &pid]));
    crate::process::notified(&manager, "STOPPING=1").await;
    let mut child = child;
    let child = child.0.take().unwrap();
    let ended = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(ended.status.success());
    let log = String::from_utf8_lossy(&ended.stdout);
    assert!(!log.contains("\"level\":\"ERROR\""), "{log}");
    // The state it wrote, as its user, where the package said.
    let state = root.join("var/lib/rempart");
    for db in ["status.db", "watch.db"] {
        let meta = std::fs::metadata(state.join(db)).unwrap_or_else(|e| panic!("{db}: {e}"));
        assert_eq!(meta.uid(), uid, "{db}");
    }
    let status_db = std::fs::read(state.join("status.db")).unwrap();

    // An upgrade keeps the administrator's configuration, the secrets and the state.
    let mut edited = std::fs::read_to_string(&shipped).unwrap();
    edited.push_str("\n# edited by the town's IT team\n");
    std::fs::write(&shipped, &edited).unwrap();
    let newer = repackaged(&deb, "99.0.0-1", work.path());
    let upgraded = text(&dpkg(&root, &["-i", newer.to_str().unwrap()]));
    assert!(upgraded.contains("99.0.0-1"), "{upgraded}");
    assert!(!upgraded.contains("rempart: made"), "{upgraded}");
    assert_eq!(std::fs::read_to_string(&shipped).unwrap(), edited);
    for (secret, before) in ["admin.token", "pass.keys", "guard.key"]
        .iter()
        .zip(&secrets)
    {
        assert_eq!(&std::fs::read_to_string(etc.join(secret)).unwrap(), before);
    }
    assert_eq!(std::fs::read(state.join("status.db")).unwrap(), status_db);

    // Removal leaves configuration and state; purge takes both.
    dpkg(&root, &["-r", "rempart"]);
    assert!(!binary.exists());
    assert!(shipped.exists() && etc.join("admin.token").exists() && state.exists());
    dpkg(&root, &["-P", "rempart"]);
    assert!(!etc.join("admin.token").exists() && !shipped.exists());
    assert!(!state.exists());
    // loopback.toml is the test's own file, which purge leaves, as dpkg leaves what it did not
    // install.
    assert!(config.exists());
}
