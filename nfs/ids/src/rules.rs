//! The signature language and the compiled rule set.
//!
//! See the crate docs for the syntax. Parsing is line by line; the first
//! bad line stops it with a [`RuleError`] naming the file, the line and
//! what is wrong.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use aho_corasick::{AhoCorasick, MatchKind};
use nf_sdk::Side;

/// Longest content accepted, in bytes: it bounds the carry-over kept per
/// stream (`longest - 1` bytes).
pub const MAX_CONTENT: usize = 1024;

/// What a matching signature does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Report the match (stderr, `FLOW/ALERT`, `--json-out`).
    Alert,
    /// Report it and ask the runtime to reset the connection.
    Terminate,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Alert => "alert",
            Action::Terminate => "terminate",
        })
    }
}

/// Which bytestream a signature looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SideSel {
    /// Bytes the client sends (`DATA_RDY/CLIENT`).
    Client,
    /// Bytes the server sends (`DATA_RDY/SERVER`).
    Server,
    /// Either.
    Any,
}

impl SideSel {
    /// Whether a stream of `side` is looked at.
    pub fn covers(self, side: Side) -> bool {
        matches!((self, side), (SideSel::Any, _) | (SideSel::Client, Side::Client) | (SideSel::Server, Side::Server))
    }
}

impl fmt::Display for SideSel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SideSel::Client => "client",
            SideSel::Server => "server",
            SideSel::Any => "any",
        })
    }
}

/// One signature line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub action: Action,
    pub name: String,
    pub side: SideSel,
    /// The bytes to find (text and `|hex|` blocks resolved).
    pub content: Vec<u8>,
    /// Line number in the file (1-based).
    pub line: usize,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {} \"{}\"", self.action, self.name, self.side, show_content(&self.content))
    }
}

/// `bytes` in the rules file's content syntax: printable ASCII as is (with
/// `"`, `\` and `|` escaped), anything else in `|hex|` blocks.
pub fn show_content(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut in_hex = false;
    for &b in bytes {
        let plain = (0x20..0x7f).contains(&b);
        if plain && in_hex {
            out.push('|');
            in_hex = false;
        }
        if plain {
            if matches!(b, b'"' | b'\\' | b'|') {
                out.push('\\');
            }
            out.push(char::from(b));
        } else {
            out.push(if in_hex { ' ' } else { '|' });
            out.push_str(&format!("{b:02x}"));
            in_hex = true;
        }
    }
    if in_hex {
        out.push('|');
    }
    out
}

/// What is wrong with one line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("expected `alert|terminate NAME client|server|any \"CONTENT\"`, found {0} field(s)")]
    FieldCount(usize),
    #[error("unknown action {0:?}; expected alert or terminate")]
    Action(String),
    #[error("bad signature name {0:?}: use 1 to 64 letters, digits, '-', '_', '.' or ':'")]
    Name(String),
    #[error("second signature named {name:?} (the first is on line {first})")]
    DuplicateName { name: String, first: usize },
    #[error("unknown side {0:?}; expected client, server or any")]
    Side(String),
    #[error("the content must be a double-quoted string, found {0:?}")]
    NotQuoted(String),
    #[error("unterminated content: missing the closing '\"'")]
    Unterminated,
    #[error("unterminated hex block: missing the closing '|'")]
    UnterminatedHex,
    #[error("bad hex digit {0:?} in a |..| block; write bytes as pairs of hex digits, e.g. |0d 0a|")]
    HexDigit(char),
    #[error("odd number of hex digits in a |..| block; write bytes as pairs of hex digits, e.g. |0d 0a|")]
    HexOdd,
    #[error("unknown escape '\\{0}'; the escapes are \\\" \\\\ and \\|")]
    Escape(char),
    #[error("empty content; a signature needs at least one byte")]
    EmptyContent,
    #[error("content of {0} bytes is longer than the {MAX_CONTENT}-byte maximum")]
    TooLong(usize),
    #[error("unexpected text after the content: {0:?} (comments start with '#')")]
    Trailing(String),
}

/// Why a rules file was refused.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{file}: cannot read the signatures: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: {err}")]
    Line { file: String, line: usize, err: LineError },
    #[error("{file}: no signatures (every line is blank or a comment)")]
    Empty { file: String },
    #[error("{file}: cannot build the matcher: {why}")]
    Build { file: String, why: String },
}

/// The first whitespace-separated token of `s` and the rest.
fn token(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    Some((&s[..end], &s[end..]))
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Parses a quoted content (`"text|0d 0a|more"`), returning its bytes and
/// the text after the closing quote.
pub fn parse_content(s: &str) -> Result<(Vec<u8>, &str), LineError> {
    let s = s.trim_start();
    let Some(body) = s.strip_prefix('"') else {
        return Err(LineError::NotQuoted(s.split_whitespace().next().unwrap_or_default().to_owned()));
    };
    let mut out = Vec::new();
    let mut chars = body.char_indices();
    let mut buf = [0u8; 4];
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &body[i + 1..])),
            '\\' => match chars.next() {
                Some((_, e @ ('"' | '\\' | '|'))) => out.push(e as u8),
                Some((_, e)) => return Err(LineError::Escape(e)),
                None => return Err(LineError::Unterminated),
            },
            '|' => {
                let mut high: Option<u8> = None;
                loop {
                    let Some((_, h)) = chars.next() else {
                        return Err(LineError::UnterminatedHex);
                    };
                    match h {
                        '|' if high.is_some() => return Err(LineError::HexOdd),
                        '|' => break,
                        '"' => return Err(LineError::UnterminatedHex),
                        h if h.is_whitespace() => {}
                        h => {
                            let d = h.to_digit(16).ok_or(LineError::HexDigit(h))? as u8;
                            match high.take() {
                                Some(hi) => out.push(hi << 4 | d),
                                None => high = Some(d),
                            }
                        }
                    }
                }
            }
            c => out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
        }
    }
    Err(LineError::Unterminated)
}

/// Parses one signature line (not blank, not a comment).
pub fn parse_rule(line: &str, line_no: usize) -> Result<Rule, LineError> {
    let fields = |n| LineError::FieldCount(n);
    let (action, rest) = token(line).ok_or(fields(0))?;
    let action = match action.to_ascii_lowercase().as_str() {
        "alert" => Action::Alert,
        "terminate" => Action::Terminate,
        _ => return Err(LineError::Action(action.to_owned())),
    };
    let (name, rest) = token(rest).ok_or(fields(1))?;
    if !valid_name(name) {
        return Err(LineError::Name(name.to_owned()));
    }
    let (side, rest) = token(rest).ok_or(fields(2))?;
    let side = match side.to_ascii_lowercase().as_str() {
        "client" => SideSel::Client,
        "server" => SideSel::Server,
        "any" => SideSel::Any,
        _ => return Err(LineError::Side(side.to_owned())),
    };
    if rest.trim().is_empty() {
        return Err(fields(3));
    }
    let (content, after) = parse_content(rest)?;
    let after = after.trim();
    if !after.is_empty() && !after.starts_with('#') {
        return Err(LineError::Trailing(after.to_owned()));
    }
    if content.is_empty() {
        return Err(LineError::EmptyContent);
    }
    if content.len() > MAX_CONTENT {
        return Err(LineError::TooLong(content.len()));
    }
    Ok(Rule { action, name: name.to_owned(), side, content, line: line_no })
}

/// The signatures and the one automaton over all their contents.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// Over the distinct contents.
    ac: AhoCorasick,
    /// Per automaton pattern: the rules with that content.
    by_pattern: Vec<Vec<usize>>,
    longest: usize,
}

impl RuleSet {
    /// Compiles parsed rules (at least one).
    pub fn new(rules: Vec<Rule>) -> Result<RuleSet, String> {
        let mut index: HashMap<&[u8], usize> = HashMap::new();
        let mut patterns: Vec<&[u8]> = Vec::new();
        let mut by_pattern: Vec<Vec<usize>> = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let p = *index.entry(&r.content).or_insert_with(|| {
                patterns.push(&r.content);
                by_pattern.push(Vec::new());
                patterns.len() - 1
            });
            by_pattern[p].push(i);
        }
        let ac = AhoCorasick::builder().match_kind(MatchKind::Standard).build(&patterns).map_err(|e| e.to_string())?;
        let longest = patterns.iter().map(|p| p.len()).max().unwrap_or(0);
        drop(index);
        Ok(RuleSet { rules, ac, by_pattern, longest })
    }

    /// Parses the text of a rules file; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<RuleSet, RuleError> {
        let mut rules: Vec<Rule> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |err| RuleError::Line { file: file.to_owned(), line: line_no, err };
            let rule = parse_rule(line, line_no).map_err(err)?;
            if let Some(first) = rules.iter().find(|r| r.name == rule.name) {
                return Err(err(LineError::DuplicateName { name: rule.name, first: first.line }));
            }
            rules.push(rule);
        }
        if rules.is_empty() {
            return Err(RuleError::Empty { file: file.to_owned() });
        }
        RuleSet::new(rules).map_err(|why| RuleError::Build { file: file.to_owned(), why })
    }

    /// Reads and parses a rules file.
    pub fn load(path: &Path) -> Result<RuleSet, RuleError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RuleError::Read { file: file.clone(), source })?;
        RuleSet::parse(&text, &file)
    }

    /// The rules in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The automaton (standard semantics: overlapping matches are found).
    pub fn automaton(&self) -> &AhoCorasick {
        &self.ac
    }

    /// The rules whose content is automaton pattern `p`.
    pub fn rules_of(&self, p: usize) -> &[usize] {
        self.by_pattern.get(p).map_or(&[], Vec::as_slice)
    }

    /// Length of the longest content.
    pub fn longest(&self) -> usize {
        self.longest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_hex_escapes_and_comments() {
        let text = "\
# a comment
alert get-cmd client \"evil|0d 0a|cmd\"   # trailing comment
terminate root:shell any \"|2f 62 69 6e|/sh\"
alert quote server \"a\\\"b\\\\c\\|d#e\"

alert HexOnly any \"|DEADbeef|\"
";
        let set = RuleSet::parse(text, "x.rules").unwrap();
        let r = set.rules();
        assert_eq!(r.len(), 4);
        assert_eq!(
            r[0],
            Rule {
                action: Action::Alert,
                name: "get-cmd".into(),
                side: SideSel::Client,
                content: b"evil\r\ncmd".to_vec(),
                line: 2
            }
        );
        assert_eq!(
            (r[1].action, r[1].side, r[1].content.as_slice()),
            (Action::Terminate, SideSel::Any, &b"/bin/sh"[..])
        );
        assert_eq!(r[2].content, b"a\"b\\c|d#e");
        assert_eq!(r[3].content, [0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(set.longest(), 9);
        assert_eq!(r[0].to_string(), "alert get-cmd client \"evil|0d 0a|cmd\"");
        assert_eq!(r[2].to_string(), "alert quote server \"a\\\"b\\\\c\\|d#e\"");
        // What --check prints parses back to the same rule.
        for rule in r {
            assert_eq!(&parse_rule(&rule.to_string(), rule.line).unwrap(), rule);
        }
    }

    #[test]
    fn duplicate_contents_share_one_pattern() {
        let set = RuleSet::parse("alert a any \"x\"\nterminate b client \"x\"\nalert c any \"yy\"\n", "f").unwrap();
        assert_eq!(set.automaton().patterns_len(), 2);
        assert_eq!(set.rules_of(0), [0, 1]);
        assert_eq!(set.rules_of(1), [2]);
    }

    #[test]
    fn bad_lines_name_file_line_and_reason() {
        let cases: &[(&str, &str)] = &[
            ("alert x any", "found 3 field(s)"),
            ("warn x any \"a\"", "unknown action \"warn\""),
            ("alert x/y any \"a\"", "bad signature name \"x/y\""),
            ("alert x both \"a\"", "unknown side \"both\""),
            ("alert x any abc", "must be a double-quoted string, found \"abc\""),
            ("alert x any \"abc", "missing the closing '\"'"),
            ("alert x any \"a|0d 0a\"", "missing the closing '|'"),
            ("alert x any \"a|0g|\"", "bad hex digit 'g'"),
            ("alert x any \"a|0d 0|\"", "odd number of hex digits"),
            ("alert x any \"a\\n\"", "unknown escape '\\n'"),
            ("alert x any \"\"", "empty content"),
            ("alert x any \"||\"", "empty content"),
            ("alert x any \"a\" extra", "unexpected text after the content: \"extra\""),
        ];
        for (line, want) in cases {
            let text = format!("# header\n{line}\n");
            let e = RuleSet::parse(&text, "sigs.rules").unwrap_err().to_string();
            assert!(e.starts_with("sigs.rules:2: "), "{line}: {e}");
            assert!(e.contains(want), "{line}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
        let long = format!("alert x any \"{}\"", "a".repeat(MAX_CONTENT + 1));
        assert!(RuleSet::parse(&long, "f").unwrap_err().to_string().contains("longer than the 1024-byte maximum"));
        let dup = RuleSet::parse("alert x any \"a\"\nalert x any \"b\"\n", "f").unwrap_err().to_string();
        assert_eq!(dup, "f:2: second signature named \"x\" (the first is on line 1)");
        let empty = RuleSet::parse("# nothing\n\n", "f").unwrap_err().to_string();
        assert!(empty.starts_with("f: no signatures"), "{empty}");
        let missing = RuleSet::load(Path::new("/nonexistent/ids.rules")).unwrap_err().to_string();
        assert!(missing.starts_with("/nonexistent/ids.rules: cannot read"), "{missing}");
    }
}
