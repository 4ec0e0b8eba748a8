//! Statements a tool would wait on: a lexical check, before anything is written, that a
//! prompt ends every statement it starts (sqlite3, bc).

use serde::{Deserialize, Serialize};

/// Which tool's idea of a finished statement a prompt is checked against before it is
/// written. A prompt the tool would wait on (an open string, comment or block) fails at once
/// with [`Error::InvalidPrompt`](crate::Error::InvalidPrompt) saying what is left open; nothing
/// is written, so the process and its state stay as they were.
///
/// ```
/// use aim::StatementCheck;
/// assert_eq!(StatementCheck::Sqlite3.unfinished("SELECT 1"), None);
/// assert!(StatementCheck::Sqlite3.unfinished("SELECT 'abc").is_some());
/// assert!(StatementCheck::Bc.unfinished("define f(n) {").is_some());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StatementCheck {
    /// No check (the default).
    #[default]
    None,
    /// sqlite3's shell: lines starting with `.` outside a statement are dot commands (one
    /// line each); the SQL must be complete by `sqlite3_complete()` once aim's `;` is added
    /// (strings `'..'`, `".."`, `[..]`, `` `..` ``, comments `/* */`, and `CREATE TRIGGER`
    /// needing its `END;`).
    Sqlite3,
    /// GNU bc: every `{` closed, no open `"string"` or `/* comment`, no last line ending in
    /// `\`, and no `if (..)`, `while (..)`, `for (..)`, `else` or `define f(..)` left without
    /// its body.
    Bc,
}

impl StatementCheck {
    /// What `prompt` leaves open, if the tool would wait for more input after it.
    pub fn unfinished(&self, prompt: &str) -> Option<String> {
        let open = match self {
            StatementCheck::None => return None,
            StatementCheck::Sqlite3 => sqlite3_unfinished(prompt),
            StatementCheck::Bc => bc_unfinished(prompt),
        }?;
        let tool = match self {
            StatementCheck::Sqlite3 => "sqlite3",
            _ => "bc",
        };
        Some(format!(
            "unfinished statement: {tool} would wait for the rest of it ({open}); nothing was \
             written"
        ))
    }
}

/// The open construct sqlite3's shell would wait on after `prompt` and aim's `;`.
fn sqlite3_unfinished(prompt: &str) -> Option<&'static str> {
    let mut sql = String::new();
    for line in prompt.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if sql.trim().is_empty() && line.starts_with('.') {
            sql.clear();
            continue;
        }
        sql.push_str(line);
        sql.push('\n');
        if sql_complete(&sql) == SqlEnd::Complete {
            sql.clear();
        }
    }
    if sql.trim().is_empty() {
        return None;
    }
    sql.push(';');
    match sql_complete(&sql) {
        SqlEnd::Complete => None,
        SqlEnd::Open(what) => Some(what),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SqlEnd {
    Complete,
    Open(&'static str),
}

/// `sqlite3_complete()`: whether `sql` ends with a complete statement (and what is open if
/// not).
fn sql_complete(sql: &str) -> SqlEnd {
    // Tokens: SEMI, WS, OTHER, EXPLAIN, CREATE, TEMP, TRIGGER, END.
    const TRANS: [[u8; 8]; 8] = [
        [1, 0, 2, 3, 4, 2, 2, 2], // 0 invalid
        [1, 1, 2, 3, 4, 2, 2, 2], // 1 start
        [1, 2, 2, 2, 2, 2, 2, 2], // 2 normal
        [1, 3, 3, 2, 4, 2, 2, 2], // 3 explain
        [1, 4, 2, 2, 2, 4, 5, 2], // 4 create
        [6, 5, 5, 5, 5, 5, 5, 5], // 5 trigger
        [6, 6, 5, 5, 5, 5, 5, 7], // 6 semi
        [1, 7, 5, 5, 5, 5, 5, 5], // 7 end
    ];
    let (semi, ws, other) = (0, 1, 2);
    let b = sql.as_bytes();
    let mut state = 0usize;
    let mut i = 0;
    while i < b.len() {
        let token = match b[i] {
            b';' => semi,
            b' ' | b'\r' | b'\t' | b'\n' | b'\x0c' => ws,
            b'/' if b.get(i + 1) == Some(&b'*') => {
                match find(b, i + 2, b"*/") {
                    Some(end) => i = end + 1,
                    None => return SqlEnd::Open("an open /* comment"),
                }
                ws
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                match find(b, i + 2, b"\n") {
                    Some(end) => i = end,
                    None => return end_state(state),
                }
                ws
            }
            b'[' => {
                match find(b, i + 1, b"]") {
                    Some(end) => i = end,
                    None => return SqlEnd::Open("an open [identifier"),
                }
                other
            }
            q @ (b'`' | b'"' | b'\'') => {
                match find(b, i + 1, &[q]) {
                    Some(end) => i = end,
                    None => {
                        return SqlEnd::Open(match q {
                            b'\'' => "an open 'string",
                            b'"' => "an open \"identifier",
                            _ => "an open `identifier",
                        })
                    }
                }
                other
            }
            c if is_id_char(c) => {
                let start = i;
                while i + 1 < b.len() && is_id_char(b[i + 1]) {
                    i += 1;
                }
                let word = &sql[start..=i];
                match word.to_ascii_lowercase().as_str() {
                    "create" => 4,
                    "trigger" => 6,
                    "temp" | "temporary" => 5,
                    "end" => 7,
                    "explain" => 3,
                    _ => other,
                }
            }
            _ => other,
        };
        state = TRANS[state][token] as usize;
        i += 1;
    }
    end_state(state)
}

fn end_state(state: usize) -> SqlEnd {
    match state {
        1 => SqlEnd::Complete,
        5..=7 => SqlEnd::Open("a CREATE TRIGGER without its END;"),
        _ => SqlEnd::Open("a statement without its ;"),
    }
}

fn is_id_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// The open construct bc would wait on after `prompt`.
fn bc_unfinished(prompt: &str) -> Option<&'static str> {
    let b = prompt.as_bytes();
    let mut braces = 0usize;
    let mut parens = 0usize;
    // The paren depth at which a header (`if (`, `while (`, `for (`, `define f(`) closes.
    let mut header: Option<usize> = None;
    let mut awaiting_body: Option<&'static str> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => {}
            b'\\' if b.get(i + 1) == Some(&b'\n') => i += 1,
            b'\\' if i + 1 == b.len() => return Some("a line ending in \\"),
            b'"' => match find(b, i + 1, b"\"") {
                Some(end) => {
                    i = end;
                    awaiting_body = None;
                }
                None => return Some("an open \"string"),
            },
            b'/' if b.get(i + 1) == Some(&b'*') => match find(b, i + 2, b"*/") {
                Some(end) => i = end + 1,
                None => return Some("an open /* comment"),
            },
            b'#' => match find(b, i + 1, b"\n") {
                Some(end) => i = end,
                None => break,
            },
            b'{' => {
                braces += 1;
                awaiting_body = None;
            }
            b'}' => {
                braces = braces.saturating_sub(1);
                awaiting_body = None;
            }
            b'(' => {
                parens += 1;
                if header.is_none() {
                    awaiting_body = None;
                }
            }
            b')' => {
                parens = parens.saturating_sub(1);
                if header == Some(parens) {
                    header = None;
                    awaiting_body = Some("an if, while, for or define without its body");
                } else {
                    awaiting_body = None;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i + 1 < b.len() && (b[i + 1].is_ascii_alphanumeric() || b[i + 1] == b'_') {
                    i += 1;
                }
                awaiting_body = None;
                match &prompt[start..=i] {
                    "if" | "while" | "for" | "define" if header.is_none() => header = Some(parens),
                    "else" => awaiting_body = Some("an else without its body"),
                    _ => {}
                }
            }
            _ => {
                if header.is_none() {
                    awaiting_body = None;
                }
            }
        }
        i += 1;
    }
    if braces > 0 {
        return Some("an open { block");
    }
    awaiting_body
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const SQL_COMPLETE: &[&str] = &[
        "SELECT 1",
        "SELECT 1;",
        "SELECT 1 -- c",
        "SELECT 1 /* c */",
        "SELECT 'a''b'",
        "SELECT \"a\"\"b\" FROM t",
        "SELECT [a b] FROM t",
        "SELECT `a` FROM t",
        "SELECT ';'",
        ".mode box",
        ".print 'abc",
        ".print \"a",
        "SELECT 1;\n.print x",
        "CREATE TABLE t(a)",
        "CREATE TRIGGER r AFTER INSERT ON t BEGIN SELECT 1; END;",
        "CREATE TRIGGER r AFTER INSERT ON t BEGIN SELECT 1; END",
        "CREATE TEMP TRIGGER r AFTER INSERT ON t BEGIN SELECT 1; END",
        "SELECT 1;\nSELECT 2",
        "SELECT\n1\n",
        "-- only a comment",
        "SELECT 'multi\nline'",
        "SELECT 1; /* trailing */",
        "SELECT 'é'",
        "EXPLAIN SELECT 1",
        "SELECT end FROM (SELECT 1 AS end)",
    ];

    pub(crate) const SQL_UNFINISHED: &[&str] = &[
        "SELECT 1 /* open",
        "SELECT \"abc",
        "SELECT [abc",
        "SELECT 'abc",
        "SELECT `abc",
        "CREATE TRIGGER r AFTER INSERT ON t BEGIN SELECT 1;",
        "CREATE TRIGGER r AFTER INSERT ON t BEGIN SELECT 1",
        "SELECT 'a';\nSELECT 'b",
        "SELECT 'a\n.print x",
        "CREATE TEMP TRIGGER r AFTER INSERT ON t BEGIN SELECT 1; END x",
    ];

    #[test]
    fn sqlite3_statements() {
        for sql in SQL_COMPLETE {
            assert_eq!(sqlite3_unfinished(sql), None, "{sql:?}");
        }
        for sql in SQL_UNFINISHED {
            assert!(sqlite3_unfinished(sql).is_some(), "{sql:?}");
        }
        assert_eq!(sqlite3_unfinished("SELECT 'abc"), Some("an open 'string"));
        assert_eq!(
            sqlite3_unfinished("CREATE TRIGGER r AFTER INSERT ON t BEGIN SELECT 1;"),
            Some("a CREATE TRIGGER without its END;")
        );
    }

    pub(crate) const BC_COMPLETE: &[&str] = &[
        "1+2",
        "x = 3",
        "define f(n) { return n }",
        "define void f() { print 1 }",
        "define f(n) {\nreturn n\n}",
        "if (0) 1",
        "if (1) 1 else 2",
        "while (0) {}",
        "for (i=0;i<1;i++) i",
        "print \"a\\\"",
        "print \"a{(\"",
        "# \"x",
        "/* { */ 1",
        "(1+2",
        "}",
        "if (f(1)) 2",
        "1 + \\\n2",
        "sqrt(2)",
    ];

    pub(crate) const BC_UNFINISHED: &[&str] = &[
        "define g(n) {",
        "\"abc",
        "/* c",
        "if (0)",
        "while (0)",
        "x = 1; while (0)",
        "if (0) /* c */",
        "if(0)#c",
        "if (1) 1 else",
        "define f(n)",
        "{",
        "while (0) {",
        "1 + \\",
        "x = \"a",
        "if (f(1))",
    ];

    #[test]
    fn bc_statements() {
        for s in BC_COMPLETE {
            assert_eq!(bc_unfinished(s), None, "{s:?}");
        }
        for s in BC_UNFINISHED {
            assert!(bc_unfinished(s).is_some(), "{s:?}");
        }
    }

    #[test]
    fn the_reason_names_the_tool() {
        let reason = StatementCheck::Sqlite3.unfinished("SELECT 'abc").unwrap();
        assert!(
            reason.contains("sqlite3") && reason.contains("'string"),
            "{reason}"
        );
        assert_eq!(StatementCheck::None.unfinished("SELECT 'abc"), None);
    }
}
