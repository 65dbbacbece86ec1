//! Quoting for SQL text pgrepl builds: names and values that cannot travel as parameters
//! (utility statements such as CREATE ROLE and ALTER SYSTEM take none).

/// An identifier, always in double quotes: `"a""b"`.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal (standard_conforming_strings, on since PostgreSQL 9.1): `'it''s'`.
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_doubled() {
        assert_eq!(ident("repl\"user"), "\"repl\"\"user\"");
        assert_eq!(literal("a'b\nc"), "'a''b\nc'");
    }
}
