//! Writes what the packages ship besides the binary and the units, generated from the CLI
//! itself so they never disagree with it: the man page (section 8) and the bash, zsh and fish
//! completions. `cargo run --release --example dist-assets -- DIR` (packaging/dist.sh does it).

use std::io::Write;
use std::path::PathBuf;

use clap::CommandFactory;
use kube_cert_renewer::cli::Cli;

fn main() -> Result<(), String> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: dist-assets OUTPUT_DIR")?,
    );
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let command = Cli::command().name("kube-cert-renewer");

    // the man pages (the command and each subcommand), gzipped with the best compression
    // (lintian checks it), mtime 0 (reproducible)
    let mut pages = vec![("kube-cert-renewer".to_string(), command.clone())];
    for sub in command.get_subcommands().filter(|c| !c.is_hide_set()) {
        let name = format!("kube-cert-renewer-{}", sub.get_name());
        // clap names are &'static (without its "string" feature): this one-shot tool leaks them
        pages.push((name.clone(), sub.clone().name(&*name.leak())));
    }
    for (name, page_command) in pages {
        let mut page = Vec::new();
        clap_mangen::Man::new(page_command)
            .section("8")
            .manual("System Administration")
            .render(&mut page)
            .map_err(|e| e.to_string())?;
        let path = dir.join(format!("{name}.8.gz"));
        let file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(file, flate2::Compression::best());
        gz.write_all(&page).map_err(|e| e.to_string())?;
        gz.finish().map_err(|e| e.to_string())?;
    }

    for (shell, name) in [
        (clap_complete::Shell::Bash, "kube-cert-renewer.bash"),
        (clap_complete::Shell::Zsh, "_kube-cert-renewer"),
        (clap_complete::Shell::Fish, "kube-cert-renewer.fish"),
    ] {
        let path = dir.join(name);
        let mut file =
            std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        clap_complete::generate(shell, &mut command.clone(), "kube-cert-renewer", &mut file);
    }
    println!("man page and completions in {}", dir.display());
    Ok(())
}
