//! Error messages on one line: attnlab reports every error as one line (the CLI's `error: …`,
//! a comparison's `<run>.error` file), so multi-line texts from parsers are folded first.

/// `s` with every run of whitespace (newlines included) replaced by one space, so a multi-line
/// parser error fits in a one-line message.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_collapses_whitespace() {
        assert_eq!(one_line("  expected `=`\n  at line 2\tcol 3 "), "expected `=` at line 2 col 3");
        assert_eq!(one_line(""), "");
    }
}
