//! Text from archives, patches and repositories shown on a terminal.
//!
//! Entry paths are input: a path holding ESC can recolour, move the cursor or retitle the
//! terminal, a newline forges an extra line in a listing, and bidi controls make a name read
//! differently from its bytes. Text output, and error messages (which quote paths), show such
//! characters escaped; `--json` output keeps paths exact (JSON escapes control characters itself).

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` with every control character (C0, DEL, C1), bidi control and backslash escaped Rust-style
/// (`\e`→`\u{1b}`, newline→`\n`, backslash→`\\`), so that what is printed is exactly what is seen
/// and distinct paths print distinctly. Text without such characters is borrowed unchanged.
pub fn escaped(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::escaped;

    #[test]
    fn plain_paths_are_borrowed_and_controls_escaped() {
        assert!(matches!(escaped("dir/ünïcode file.txt"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(escaped("a\u{1b}[31mred\nb"), "a\\u{1b}[31mred\\nb");
        assert_eq!(escaped("tab\there\r\u{7f}\u{85}\u{9b}"), "tab\\there\\r\\u{7f}\\u{85}\\u{9b}");
        assert_eq!(escaped("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(escaped("back\\slash"), "back\\\\slash", "escapes cannot be forged");
        assert_eq!(escaped("nul\0"), "nul\\u{0}");
    }
}
