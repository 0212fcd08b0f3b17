//! The manual pages and shell completions, generated from the command-line definition so
//! they never disagree with `--help`: `rempart(8)` with the files, signals and exit codes an
//! administrator looks for, and one `rempart-COMMAND(8)` page per command (as git does).

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use super::Cli;

/// Section of the pages: a daemon and its administration commands.
const SECTION: &str = "8";
/// The footer of every page: the program and its version.
const SOURCE: &str = concat!("rempart ", env!("CARGO_PKG_VERSION"));
/// The header of every page.
const MANUAL: &str = "Rempart manual";

/// What `rempart(8)` says beyond the generated sections (roff).
const MAIN_EXTRA: &str = r#".SH FILES
.TP
\fI/etc/rempart/rempart.toml\fR
The configuration. Check it with \fBrempart check\fR; the running gateway reloads it when it
changes, on \fBsystemctl reload rempart\fR (SIGHUP) or on \fBrempart reload\fR. A file that does
not validate is refused and the running configuration keeps serving.
.TP
\fI/etc/rempart/admin.token\fR
The admin API's bearer token (mode 0600), made at installation when absent.
.TP
\fI/etc/rempart/pass.keys\fR, \fI/etc/rempart/guard.key\fR
The keys signing pass cookies and hashing accounts, made at installation when absent.
.TP
\fI/var/lib/rempart/\fR
State: status pages, security incidents and the data guard's journal (SQLite), stale
copies of public pages, the static copy of the status site. Back it up with the
configuration.
.SH SIGNALS
.TP
\fBSIGHUP\fR
Reload the configuration (what \fBsystemctl reload\fR sends).
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Stop accepting, finish requests in flight for at most \fItimeouts.shutdown_drain\fR, exit 0.
.SH ENVIRONMENT
.TP
\fBNOTIFY_SOCKET\fR, \fBWATCHDOG_USEC\fR
Set by systemd for a \fBType=notify\fR unit: readiness is sent once every listener is bound,
watchdog pings at half the timeout.
.TP
\fBRUST_LOG\fR
Log filter (for example \fBinfo,rempart::access=off\fR).
.SH EXIT STATUS
.TP
\fB0\fR
Success (a clean stop for \fBrun\fR).
.TP
\fB1\fR
A command failed (for example, the admin API could not be reached).
.TP
\fB2\fR
The configuration does not validate, or a command's arguments are wrong; every problem is
printed with its file and line.
.SH SEE ALSO
\fBsystemctl\fR(1), \fBjournalctl\fR(1), \fBsystemd.service\fR(5).
The documentation in \fI/usr/share/doc/rempart/\fR: \fBoperations.md\fR (installation,
upgrades, backups, alerts), \fBconfig.md\fR (every key), \fBmetrics.md\fR.
"#;

/// Every page as (file name, roff text): `rempart.8`, then `rempart-COMMAND.8` for each
/// visible command and subcommand.
pub fn pages() -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut cli = Cli::command().disable_help_subcommand(true);
    cli.build();
    let mut pages = Vec::new();
    let main = clap_mangen::Man::new(cli.clone())
        .section(SECTION)
        .source(SOURCE)
        .manual(MANUAL);
    let mut text = Vec::new();
    main.render(&mut text)?;
    text.write_all(MAIN_EXTRA.as_bytes())?;
    let mut see_also = String::new();
    for command in cli.get_subcommands().filter(|c| !c.is_hide_set()) {
        see_also.push_str(&format!(
            "\\fBrempart\\-{}\\fR({SECTION}), ",
            command.get_name()
        ));
    }
    text.write_all(format!(".PP\n{}\n", see_also.trim_end_matches(", ")).as_bytes())?;
    pages.push((main.get_filename(), text));
    add_commands(&cli, "rempart", &mut pages)?;
    Ok(pages)
}

fn add_commands(
    parent: &clap::Command,
    prefix: &str,
    pages: &mut Vec<(String, Vec<u8>)>,
) -> std::io::Result<()> {
    for command in parent.get_subcommands().filter(|c| !c.is_hide_set()) {
        let name = format!("{prefix}-{}", command.get_name());
        let page = clap_mangen::Man::new(
            command
                .clone()
                .display_name(name.clone())
                .bin_name(name.replacen('-', " ", usize::MAX)),
        )
        .section(SECTION)
        .source(SOURCE)
        .manual(MANUAL);
        let mut text = Vec::new();
        page.render(&mut text)?;
        text.write_all(format!(".SH SEE ALSO\n\\fBrempart\\fR({SECTION})\n").as_bytes())?;
        pages.push((page.get_filename(), text));
        add_commands(command, &name, pages)?;
    }
    Ok(())
}

/// `rempart man --dir DIR`: writes every page into `dir`.
pub fn write_pages(dir: &Path) -> i32 {
    let written = pages().and_then(|pages| {
        std::fs::create_dir_all(dir)?;
        for (name, text) in &pages {
            std::fs::write(dir.join(name), text)?;
        }
        Ok(pages.len())
    });
    match written {
        Ok(n) => {
            println!("{n} manual page(s) written to {}", dir.display());
            0
        }
        Err(e) => {
            eprintln!("cannot write the manual pages to {}: {e}", dir.display());
            1
        }
    }
}

/// `rempart completions SHELL`: the completion script on standard output.
pub fn completions(shell: clap_complete::Shell) -> i32 {
    // Rendered whole first: the generator panics on a write error (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "rempart", &mut script);
    match std::io::stdout().write_all(&script) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("cannot write the completion script: {e}");
            1
        }
    }
}
