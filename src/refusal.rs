//! Prompt lines a tool must never be sent, refused before anything is written.

use serde::{Deserialize, Serialize};

/// Lines refused by their first word, with the reason the error gives: commands that would
/// break the framing itself (sqlite3's `.output FILE` would send the end-of-answer sentinel
/// into the user's file).
///
/// A prompt line is refused when its first word (up to a space or tab), with every `"` and
/// `'` removed, equals one of `words` (so `."output"` counts as `.output`). A line starting
/// with whitespace has no first word (sqlite3 reads it as SQL, not as a dot command).
///
/// ```
/// let r = aim::Refusal::new([".once"], "it redirects standard output");
/// assert_eq!(r.check(".once out.txt"), Some(".once"));
/// assert_eq!(r.check("SELECT 1;"), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Refusal {
    /// The first words that make a line refused, compared exactly (case matters). Defaults to
    /// none.
    pub words: Vec<String>,
    /// Why such lines are refused, quoted in [`Error::InvalidPrompt`](crate::Error::InvalidPrompt).
    /// Defaults to empty.
    pub reason: String,
    /// A line with the word alone (nothing after it but spaces or tabs) is allowed (sqlite3's
    /// bare `.output` sends output back to standard output). Defaults to false.
    pub allow_alone: bool,
}

impl Refusal {
    /// A refusal of lines starting with any of `words`, for `reason`.
    pub fn new<I, S>(words: I, reason: impl Into<String>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Refusal {
            words: words.into_iter().map(Into::into).collect(),
            reason: reason.into(),
            allow_alone: false,
        }
    }

    /// The same refusal, allowing a line with the word alone (see [`Refusal::allow_alone`]).
    ///
    /// ```
    /// let r = aim::Refusal::new([".output"], "it redirects standard output").allowing_alone();
    /// assert_eq!(r.check(".output"), None);
    /// assert_eq!(r.check(".output x"), Some(".output"));
    /// ```
    pub fn allowing_alone(mut self) -> Self {
        self.allow_alone = true;
        self
    }

    /// The refused word `prompt` starts a line with, if any (every line is checked).
    pub fn check(&self, prompt: &str) -> Option<&str> {
        prompt.split(['\n', '\r']).find_map(|line| {
            let first = line.split([' ', '\t']).next().unwrap_or("");
            if first.is_empty() {
                return None;
            }
            if self.allow_alone && line[first.len()..].trim_matches([' ', '\t']).is_empty() {
                return None;
            }
            let bare: String = first.chars().filter(|c| !matches!(c, '"' | '\'')).collect();
            self.words.iter().find(|w| **w == bare).map(String::as_str)
        })
    }
}

/// Why `prompt` is refused by the first of `refusals` that matches, if one does.
pub(crate) fn refused(refusals: &[Refusal], prompt: &str) -> Option<String> {
    refusals.iter().find_map(|r| {
        r.check(prompt)
            .map(|word| format!("`{word}` is refused: {}", r.reason))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output() -> Refusal {
        Refusal::new([".o", ".output", ".once"], "it redirects standard output")
    }

    #[test]
    fn first_words_are_compared_exactly_on_every_line() {
        let r = output();
        assert_eq!(r.check(".output /tmp/x"), Some(".output"));
        assert_eq!(r.check(".o x"), Some(".o"));
        assert_eq!(r.check(".once"), Some(".once"));
        assert_eq!(r.check("SELECT 1;\n.once x"), Some(".once"));
        assert_eq!(r.check("SELECT 1;\r.once x"), Some(".once"));
        assert_eq!(r.check(".open db"), None);
        assert_eq!(r.check(".OUTPUT x"), None);
        assert_eq!(r.check("SELECT '.output x';"), None);
        assert_eq!(r.check(" .output x"), None);
        assert_eq!(r.check(""), None);
    }

    #[test]
    fn quotes_do_not_hide_a_word() {
        let r = output();
        assert_eq!(r.check(".\"output\" x"), Some(".output"));
        assert_eq!(r.check(".'once' x"), Some(".once"));
        assert_eq!(r.check(".'once'\tx"), Some(".once"));
    }

    #[test]
    fn a_word_alone_can_be_allowed() {
        let r = output().allowing_alone();
        assert_eq!(r.check(".output"), None);
        assert_eq!(r.check(".o \t "), None);
        assert_eq!(r.check("SELECT 1;\n.output"), None);
        assert_eq!(r.check(".output x"), Some(".output"));
        assert_eq!(r.check(".output\tx"), Some(".output"));
        assert_eq!(output().check(".output"), Some(".output"));
    }

    #[test]
    fn the_reason_names_the_word() {
        let reason = refused(&[output()], "\n.once x").unwrap();
        assert_eq!(reason, "`.once` is refused: it redirects standard output");
        assert_eq!(refused(&[output()], "SELECT 1;"), None);
        assert_eq!(refused(&[], ".once x"), None);
    }
}
