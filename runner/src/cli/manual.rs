//! `edge-runner completions SHELL` and `edge-runner man`: shell completions
//! and man pages generated from the same clap definitions the parser uses,
//! so they cannot drift from the commands.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::Exit;

#[derive(Debug, Args)]
pub(super) struct CompletionsArgs {
    /// The shell to complete for.
    shell: clap_complete::Shell,
}

impl CompletionsArgs {
    pub(super) fn execute(self) -> Result<Exit> {
        let mut command = super::command();
        let mut out = Vec::new();
        clap_complete::generate(self.shell, &mut command, "edge-runner", &mut out);
        use std::io::Write;
        std::io::stdout()
            .lock()
            .write_all(&out)
            .context("writing the completions")?;
        Ok(Exit::Ok)
    }
}

#[derive(Debug, Args)]
pub(super) struct ManArgs {
    /// Directory to write the pages to: edge-runner.1 and one edge-runner-COMMAND.1 per
    /// subcommand (e.g. /usr/local/share/man/man1).
    #[arg(long)]
    out: PathBuf,
}

impl ManArgs {
    pub(super) fn execute(self) -> Result<Exit> {
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("--out {}", self.out.display()))?;
        let mut written = 0;
        let mut pending = vec![("edge-runner".to_string(), super::command())];
        while let Some((name, command)) = pending.pop() {
            for sub in command.get_subcommands() {
                if sub.get_name() == "help" {
                    continue;
                }
                let full = format!("{name}-{}", sub.get_name());
                pending.push((full.clone(), sub.clone().name(full)));
            }
            let mut page = Vec::new();
            clap_mangen::Man::new(command.clone().name(name.clone()))
                .render(&mut page)
                .context("rendering a man page")?;
            let path = self.out.join(format!("{name}.1"));
            super::write_atomically(&path, &page)?;
            written += 1;
        }
        say!("wrote {written} man pages to {}", self.out.display())?;
        Ok(Exit::Ok)
    }
}
