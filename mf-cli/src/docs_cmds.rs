//! `mf completions SHELL` and `mf man --out DIR`: shell completion scripts and manual pages generated
//! from the same clap definitions the parser uses, so they never drift from the real flags.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::Outcome;

#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(Args)]
pub struct ManArgs {
    /// Directory to write the pages into (created if missing): mf.1 and one page per subcommand
    /// (mf-pack.1, mf-release-add.1...). Existing pages are replaced atomically.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// Prints the completion script for `args.shell` on standard output.
pub fn completions(args: CompletionsArgs) -> Outcome {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut crate::Cli::command(), "mf", &mut script);
    std::io::stdout().lock().write_all(&script)?;
    Ok(true)
}

/// Writes the manual pages of `mf` and of every (nested) subcommand into `args.out`.
pub fn man(args: ManArgs) -> Outcome {
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut command = crate::Cli::command().disable_help_subcommand(true);
    command.build(); // gives subcommands their display names (mf-release-add)
    let mut pending = vec![command];
    let mut written = 0;
    while let Some(command) = pending.pop() {
        pending.extend(command.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
        let page = clap_mangen::Man::new(command);
        let mut roff = Vec::new();
        page.render(&mut roff)?;
        let path = args.out.join(page.get_filename());
        mf_format::fs::write_atomic(&path, &roff).with_context(|| format!("writing {}", path.display()))?;
        written += 1;
    }
    say!("wrote {written} manual pages to {}", args.out.display())?;
    Ok(true)
}
