//! `mf completions` and `mf man`: the generated completion script works in a real bash, and the
//! manual pages render with groff without a warning.

mod common;

use std::process::Command;

use common::mf_ok;

#[test]
fn bash_completion_loads_and_completes_subcommands_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let script = mf_ok(dir.path(), &["completions", "bash"]);
    std::fs::write(dir.path().join("mf.bash"), &script).unwrap();
    // What bash does on `mf pa<TAB>` and `mf pack --fr<TAB>`: call the registered function with
    // COMP_WORDS/COMP_CWORD set, then read COMPREPLY.
    let complete = |words: &str, cword: usize| {
        let program = format!(
            "set -e; source ./mf.bash; complete -p mf >/dev/null; COMP_WORDS=({words}); COMP_CWORD={cword}; \
             COMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}; _mf mf \"${{COMP_WORDS[$COMP_CWORD]}}\" \"${{COMP_WORDS[$COMP_CWORD-1]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        let output = Command::new("bash").arg("-c").arg(program).current_dir(dir.path()).output().unwrap();
        assert!(output.status.success(), "bash failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let subcommands = complete("mf pa", 1);
    assert_eq!(subcommands.lines().collect::<Vec<_>>(), ["pack", "patch-info"], "{subcommands}");
    let flags = complete("mf pack --fr", 2);
    assert_eq!(flags.lines().collect::<Vec<_>>(), ["--frame-size"], "{flags}");
}

#[test]
fn every_shell_gets_a_script_naming_the_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let script = mf_ok(dir.path(), &["completions", shell]);
        for subcommand in ["pack", "extract", "patch-info", "completions"] {
            assert!(script.contains(subcommand), "{shell} script lacks {subcommand}");
        }
    }
}

#[test]
fn man_pages_render_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man");
    mf_ok(dir.path(), &["man", "--out", out.to_str().unwrap()]);
    let mut pages: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    pages.sort();
    for expected in ["mf.1", "mf-pack.1", "mf-release.1", "mf-release-add.1", "mf-update.1", "mf-man.1"] {
        assert!(pages.iter().any(|p| p == expected), "{expected} missing from {pages:?}");
    }
    // Plain ASCII without overstriking, for reading the text back.
    let render = |page: &str, flags: &[&str]| {
        Command::new("groff").args(["-man"]).args(flags).arg(out.join(page)).output().unwrap()
    };
    for page in &pages {
        // -ww: all warnings; groff prints them on stderr.
        let output = render(page, &["-Tutf8", "-ww", "-z"]);
        let warnings = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success() && warnings.is_empty(), "{page}: {warnings}");
        let text = String::from_utf8(render(page, &["-Tascii", "-P-cbou"]).stdout).unwrap();
        assert!(text.contains("NAME") && text.contains("SYNOPSIS"), "{page} renders no man page:\n{text}");
    }
    let pack = String::from_utf8(render("mf-pack.1", &["-Tascii", "-P-cbou"]).stdout).unwrap();
    assert!(pack.contains("--frame-size") && pack.contains("--exclude"), "mf-pack.1 lacks its flags:\n{pack}");
    // Generating again replaces the pages in place.
    mf_ok(dir.path(), &["man", "--out", out.to_str().unwrap()]);
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), pages.len());
}
