//! The command tag psql prints after a statement that returns no rows (`CREATE TABLE`,
//! `INSERT 0 1`, `UPDATE 3`). The server sends it, but tokio-postgres hands on only the row
//! count, so the tag's words are read from the statement: the query is split into statements
//! as psql splits it (outside quotes, comments and parentheses), and each statement's leading
//! keywords name its tag, the server's count completing it.

/// Each statement's words outside parentheses, quotes and comments, upper-cased; statements
/// with no word (empty, or only a comment) are left out, as the server leaves them out.
pub fn statements(sql: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut depth = 0usize;
    let mut chars = sql.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let rest = &sql[i..];
        match c {
            '-' if rest.starts_with("--") => while chars.next_if(|&(_, c)| c != '\n').is_some() {},
            '/' if rest.starts_with("/*") => {
                chars.next();
                let mut nest = 1;
                while nest > 0 {
                    let Some((j, c)) = chars.next() else { break };
                    match c {
                        '*' if sql[j..].starts_with("*/") => {
                            chars.next();
                            nest -= 1;
                        }
                        '/' if sql[j..].starts_with("/*") => {
                            chars.next();
                            nest += 1;
                        }
                        _ => {}
                    }
                }
            }
            '\'' | '"' => {
                let escapes = c == '\'' && sql[..i].ends_with(['E', 'e']);
                while let Some((_, d)) = chars.next() {
                    if escapes && d == '\\' {
                        chars.next();
                    } else if d == c {
                        // A doubled quote is one quote inside the literal.
                        if chars.next_if(|&(_, e)| e == c).is_none() {
                            break;
                        }
                    }
                }
                if c == '"' && depth == 0 {
                    words.push("\"".into());
                }
            }
            '$' if dollar_tag(rest).is_some() => {
                let tag = dollar_tag(rest).expect("checked");
                let body = i + tag.len();
                let end = sql[body..]
                    .find(tag)
                    .map_or(sql.len(), |e| body + e + tag.len());
                while chars.next_if(|&(j, _)| j < end).is_some() {}
            }
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ';' if depth == 0 && !words.is_empty() => out.push(std::mem::take(&mut words)),
            c if c.is_alphabetic() || c == '_' => {
                let mut end = i + c.len_utf8();
                while let Some((j, d)) =
                    chars.next_if(|&(_, d)| d.is_alphanumeric() || d == '_' || d == '$')
                {
                    end = j + d.len_utf8();
                }
                if depth == 0 {
                    words.push(sql[i..end].to_uppercase());
                }
            }
            _ => {}
        }
    }
    if !words.is_empty() {
        out.push(words);
    }
    out
}

/// `$tag$` or `$$` at the start of `s`: the opening of a dollar-quoted string.
fn dollar_tag(s: &str) -> Option<&str> {
    let inner = &s[1..];
    let end = inner.find('$')?;
    let name = &inner[..end];
    let ok = name.is_empty()
        || (name.starts_with(|c: char| c.is_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_alphanumeric() || c == '_'));
    ok.then(|| &s[..end + 2])
}

/// Words that qualify what CREATE makes without being part of the tag.
const MODIFIERS: &[&str] = &[
    "OR",
    "REPLACE",
    "TEMP",
    "TEMPORARY",
    "UNLOGGED",
    "GLOBAL",
    "LOCAL",
    "UNIQUE",
    "RECURSIVE",
    "TRUSTED",
    "PROCEDURAL",
    "CONSTRAINT",
];

/// Objects whose name in a tag is two or three words.
const LONG_OBJECTS: &[&[&str]] = &[
    &["MATERIALIZED", "VIEW"],
    &["FOREIGN", "DATA", "WRAPPER"],
    &["FOREIGN", "TABLE"],
    &["TEXT", "SEARCH", "CONFIGURATION"],
    &["TEXT", "SEARCH", "DICTIONARY"],
    &["TEXT", "SEARCH", "PARSER"],
    &["TEXT", "SEARCH", "TEMPLATE"],
    &["EVENT", "TRIGGER"],
    &["ACCESS", "METHOD"],
    &["OPERATOR", "CLASS"],
    &["OPERATOR", "FAMILY"],
    &["USER", "MAPPING"],
    &["DEFAULT", "PRIVILEGES"],
    &["LARGE", "OBJECT"],
];

/// The tag of a statement (its words from [`statements`]) that returned no rows and
/// affected `rows` rows.
pub fn tag(words: &[String], rows: u64) -> String {
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let verb = match w.first() {
        Some(&"WITH") => main_verb(&w).unwrap_or("SELECT"),
        Some(v) => v,
        None => return String::new(),
    };
    match verb {
        "INSERT" => format!("INSERT 0 {rows}"),
        "UPDATE" | "DELETE" | "MERGE" | "SELECT" | "FETCH" | "MOVE" | "COPY" => {
            format!("{verb} {rows}")
        }
        "VALUES" | "TABLE" => format!("SELECT {rows}"),
        "CREATE" | "ALTER" | "DROP" => object_tag(verb, &w[1..], rows),
        "TRUNCATE" => "TRUNCATE TABLE".into(),
        "LOCK" => "LOCK TABLE".into(),
        "END" => "COMMIT".into(),
        "ABORT" => "ROLLBACK".into(),
        "START" => "START TRANSACTION".into(),
        "COMMIT" | "ROLLBACK" if w.get(1) == Some(&"PREPARED") => format!("{verb} PREPARED"),
        "PREPARE" if w.get(1) == Some(&"TRANSACTION") => "PREPARE TRANSACTION".into(),
        "DISCARD" | "REFRESH" | "IMPORT" | "REASSIGN" | "SECURITY" => w
            .iter()
            .take(match verb {
                "DISCARD" => 2,
                "SECURITY" => 2,
                _ => 3,
            })
            .copied()
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// The statement a WITH clause leads to: the first verb outside the clause's parentheses.
fn main_verb<'a>(w: &[&'a str]) -> Option<&'a str> {
    w.iter()
        .copied()
        .find(|v| ["SELECT", "INSERT", "UPDATE", "DELETE", "MERGE"].contains(v))
}

fn object_tag(verb: &str, rest: &[&str], rows: u64) -> String {
    let rest: Vec<&str> = rest
        .iter()
        .copied()
        .skip_while(|w| MODIFIERS.contains(w))
        .collect();
    if verb == "CREATE"
        && matches!(rest.first(), Some(&"TABLE") | Some(&"MATERIALIZED"))
        && rest.contains(&"AS")
    {
        // CREATE TABLE AS and CREATE MATERIALIZED VIEW report the rows they stored.
        return format!("SELECT {rows}");
    }
    let object = LONG_OBJECTS
        .iter()
        .find(|o| rest.starts_with(o))
        .map(|o| o.join(" "))
        .or_else(|| {
            rest.first().map(|o| match *o {
                "USER" | "GROUP" => "ROLE".to_string(),
                o => o.to_string(),
            })
        });
    match object {
        Some(o) => format!("{verb} {o}"),
        None => verb.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(sql: &str, rows: u64) -> Vec<String> {
        statements(sql).iter().map(|s| tag(s, rows)).collect()
    }

    #[test]
    fn tags_as_psql_prints_them() {
        assert_eq!(
            tags(
                "CREATE TABLE t (id int PRIMARY KEY, note text); INSERT INTO t VALUES (1, 'a;b')",
                1
            ),
            ["CREATE TABLE", "INSERT 0 1"]
        );
        assert_eq!(tags("update t set x = 1", 3), ["UPDATE 3"]);
        assert_eq!(tags("CREATE UNIQUE INDEX i ON t (x)", 0), ["CREATE INDEX"]);
        assert_eq!(
            tags(
                "create or replace function f() returns int as $$ select 1; $$ language sql",
                0
            ),
            ["CREATE FUNCTION"]
        );
        assert_eq!(tags("CREATE TABLE c AS SELECT 1", 1), ["SELECT 1"]);
        assert_eq!(tags("create temp table x()", 0), ["CREATE TABLE"]);
        assert_eq!(
            tags("DROP MATERIALIZED VIEW mv", 0),
            ["DROP MATERIALIZED VIEW"]
        );
        assert_eq!(
            tags("ALTER SYSTEM SET work_mem = '8MB'", 0),
            ["ALTER SYSTEM"]
        );
        assert_eq!(tags("create user bob", 0), ["CREATE ROLE"]);
        assert_eq!(tags("TRUNCATE t", 0), ["TRUNCATE TABLE"]);
        assert_eq!(
            tags("begin; delete from t; commit", 2),
            ["BEGIN", "DELETE 2", "COMMIT"]
        );
        assert_eq!(
            tags("WITH a AS (SELECT 1) INSERT INTO t SELECT * FROM a", 1),
            ["INSERT 0 1"]
        );
        assert_eq!(tags("CHECKPOINT", 0), ["CHECKPOINT"]);
        assert_eq!(tags("do $x$ begin perform 1; end $x$", 0), ["DO"]);
    }

    #[test]
    fn statements_split_where_psql_splits() {
        let s = statements(
            "-- a comment; still a comment\n\
             INSERT INTO \"we;ird\" VALUES (E'it\\'s;', $$;$$, 'x''y;');\n\
             /* one /* nested; */ comment; */ ;; SELECT ($1)",
        );
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[0][..2], ["INSERT", "INTO"]);
        assert_eq!(s[1], ["SELECT"]);
        assert!(statements("  ;  -- nothing\n").is_empty());
    }
}
