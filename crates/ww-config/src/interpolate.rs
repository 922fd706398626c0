//! `${VAR}` interpolation of configuration text.
//!
//! Forms: `${VAR}` (error when unset), `${VAR:-default}` (default when unset
//! or empty), `${VAR:?message}` (error with the message when unset or empty),
//! and `$$` for a literal `$`. TOML comments are copied verbatim, so an
//! example written in a comment is never expanded. The environment is a parameter, never read
//! here, so tests run in parallel. Every problem is reported, not just the first.
//!
//! A value can never change the TOML around it: inside a basic string
//! (`"..."`) its `"` and `\` are escaped; inside a literal string (`'...'`),
//! where nothing can be escaped, a value containing `'` is refused; outside
//! a string (a bare number or boolean) only letters, digits and `.:+-_` are
//! accepted. Values containing a newline or another control character are
//! refused everywhere.

use std::collections::HashMap;

/// Interpolates `text`, returning the result or every error found.
pub fn interpolate(text: &str, env: &HashMap<String, String>) -> Result<String, Vec<String>> {
    let mut output = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let (code, comment) = line.split_at(comment_start(line).unwrap_or(line.len()));
        interpolate_line(code, index + 1, env, &mut output, &mut errors);
        output.push_str(comment);
    }
    if errors.is_empty() { Ok(output) } else { Err(errors) }
}

/// Returns where a TOML comment starts: the first `#` outside a string.
fn comment_start(line: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut is_escaped = false;
    for (position, character) in line.char_indices() {
        match (quote, character) {
            (Some('"'), '\\') if !is_escaped => {
                is_escaped = true;
                continue;
            }
            (Some(open), _) if character == open && !is_escaped => quote = None,
            (None, '"' | '\'') => quote = Some(character),
            (None, '#') => return Some(position),
            _ => {}
        }
        is_escaped = false;
    }
    None
}

/// Where a `${...}` stands in a TOML line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    /// Outside any string: a bare value.
    Bare,
    /// Inside `"..."`: escapes are interpreted.
    BasicString,
    /// Inside `'...'`: taken literally, nothing can be escaped.
    LiteralString,
}

fn interpolate_line(
    text: &str,
    line: usize,
    env: &HashMap<String, String>,
    output: &mut String,
    errors: &mut Vec<String>,
) {
    let mut context = Context::Bare;
    let mut is_escaped = false;
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        let (before, after_dollar) = rest.split_at(dollar);
        track_context(before, &mut context, &mut is_escaped);
        output.push_str(before);
        let after_dollar = &after_dollar[1..];
        if let Some(stripped) = after_dollar.strip_prefix('$') {
            output.push('$');
            rest = stripped;
            continue;
        }
        let Some(body_and_rest) = after_dollar.strip_prefix('{') else {
            output.push('$');
            rest = after_dollar;
            continue;
        };
        let Some(close) = body_and_rest.find('}') else {
            errors.push(format!("line {line}: unterminated ${{ (add the closing brace or write $$ for a literal $)"));
            return;
        };
        let body = &body_and_rest[..close];
        rest = &body_and_rest[close + 1..];
        let name = variable_name(body);
        match expand(body, env) {
            Ok(value) if value.chars().any(char::is_control) => {
                errors.push(format!(
                    "line {line}: the value of ${{{name}}} contains a newline or another control character"
                ));
            }
            Ok(value) => match place(&value, context) {
                Ok(placed) => output.push_str(&placed),
                Err(reason) => errors.push(format!("line {line}: the value of ${{{name}}} {reason}")),
            },
            Err(error) => errors.push(format!("line {line}: {error}")),
        }
    }
    output.push_str(rest);
}

/// Follows `text` (plain config text, no `${...}`) and updates whether the
/// position after it is inside a string.
fn track_context(text: &str, context: &mut Context, is_escaped: &mut bool) {
    for character in text.chars() {
        match (*context, character) {
            (Context::BasicString, '\\') if !*is_escaped => {
                *is_escaped = true;
                continue;
            }
            (Context::BasicString, '"') if !*is_escaped => *context = Context::Bare,
            (Context::LiteralString, '\'') => *context = Context::Bare,
            (Context::Bare, '"') => *context = Context::BasicString,
            (Context::Bare, '\'') => *context = Context::LiteralString,
            _ => {}
        }
        *is_escaped = false;
    }
}

/// Returns `value` as it can stand in `context` without changing the TOML
/// around it, or why it cannot.
fn place(value: &str, context: Context) -> Result<String, &'static str> {
    match context {
        Context::BasicString => Ok(value.replace('\\', "\\\\").replace('"', "\\\"")),
        Context::LiteralString if value.contains('\'') => {
            Err("contains ' inside a '...' string; use a \"...\" string for it")
        }
        Context::LiteralString => Ok(value.to_string()),
        Context::Bare
            if value.chars().all(|character| character.is_ascii_alphanumeric() || ".:+-_".contains(character)) =>
        {
            Ok(value.to_string())
        }
        Context::Bare => Err("is not a plain number or word; quote the ${...} (\"${...}\") to use it as a string"),
    }
}

fn variable_name(body: &str) -> &str {
    body.split(":-").next().and_then(|name| name.split(":?").next()).unwrap_or(body)
}

fn expand(body: &str, env: &HashMap<String, String>) -> Result<String, String> {
    let (name, fallback) = if let Some((name, default)) = body.split_once(":-") {
        (name, Fallback::Default(default))
    } else if let Some((name, message)) = body.split_once(":?") {
        (name, Fallback::Required(message))
    } else {
        (body, Fallback::None)
    };
    if name.is_empty() || !name.chars().all(|character| character.is_ascii_alphanumeric() || character == '_') {
        return Err(format!("invalid variable name {name:?} in ${{{body}}}"));
    }
    let value = env.get(name).filter(|value| !value.is_empty());
    match (value, fallback) {
        (Some(value), _) => Ok(value.clone()),
        (None, Fallback::Default(default)) => Ok(default.to_string()),
        (None, Fallback::Required(message)) => Err(format!("{name} is required: {message}")),
        (None, Fallback::None) => {
            Err(format!("environment variable {name} is not set (use ${{{name}:-default}} for a default)"))
        }
    }
}

enum Fallback<'a> {
    None,
    Default(&'a str),
    Required(&'a str),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()
    }

    #[test]
    fn substitutes_defaults_and_escapes() {
        let vars = env(&[("HOST", "example.org"), ("EMPTY", "")]);
        let text = "a = \"${HOST}\"\nb = \"${PORT:-8899}\"\nc = \"${EMPTY:-x}\"\nd = \"$$HOME $5\"";
        assert_eq!(
            interpolate(text, &vars).expect("ok"),
            "a = \"example.org\"\nb = \"8899\"\nc = \"x\"\nd = \"$HOME $5\""
        );
    }

    #[test]
    fn reports_every_error_with_its_line() {
        let text = "a = \"${MISSING}\"\nb = \"${TOKEN:?set your bot token}\"\nc = \"${bad name}\"";
        let errors = interpolate(text, &env(&[])).expect_err("errors");
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("line 1: environment variable MISSING is not set"), "{errors:?}");
        assert_eq!(errors[1], "line 2: TOKEN is required: set your bot token");
        assert!(errors[2].starts_with("line 3: invalid variable name"), "{errors:?}");
    }

    #[test]
    fn rejects_newlines_in_values() {
        let errors = interpolate("x = \"${EVIL}\"", &env(&[("EVIL", "a\"\ninjected = true")])).expect_err("newline");
        assert!(errors[0].contains("contains a newline"), "{errors:?}");
    }

    /// Regression (issue #13, secrets 2): a value holding `"` closed the
    /// string it was placed in and could add keys to the configuration.
    #[test]
    fn a_value_never_changes_the_toml_around_it() {
        let vars = env(&[
            ("QUOTE", "a\" , injected = \"x"),
            ("SLASH", "C:\\data\\n"),
            ("APOSTROPHE", "it's"),
            ("PORT", "8080"),
            ("SPACES", "1, evil = 2"),
        ]);
        let basic = interpolate("x = \"${QUOTE}\"\ny = \"${SLASH}\"\nz = \"${APOSTROPHE}\"", &vars).expect("escaped");
        let parsed: toml::Table = toml::from_str(&basic).expect("valid TOML");
        assert_eq!(parsed.len(), 3, "{basic}");
        assert_eq!(parsed["x"].as_str(), Some("a\" , injected = \"x"));
        assert_eq!(parsed["y"].as_str(), Some("C:\\data\\n"));
        assert_eq!(parsed["z"].as_str(), Some("it's"));
        let errors = interpolate("x = '${APOSTROPHE}'\ny = ${SPACES}", &vars).expect_err("refused");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("inside a '...' string"), "{errors:?}");
        assert!(errors[1].contains("not a plain number or word"), "{errors:?}");
        assert_eq!(interpolate("port = ${PORT}\nq = '${PORT}'", &vars).expect("plain"), "port = 8080\nq = '8080'");
        let control = interpolate("x = \"${TAB}\"", &env(&[("TAB", "a\tb")])).expect_err("control");
        assert!(control[0].contains("control character"), "{control:?}");
    }

    #[test]
    fn comments_are_not_expanded() {
        let text = "# use ${VAR} or ${VAR:?message}\nurl = \"a#${HOST}\" # ${NOT_THIS}\n";
        let vars = env(&[("HOST", "h")]);
        assert_eq!(
            interpolate(text, &vars).expect("ok"),
            "# use ${VAR} or ${VAR:?message}\nurl = \"a#h\" # ${NOT_THIS}\n"
        );
    }

    #[test]
    fn unterminated_braces_are_an_error() {
        assert!(interpolate("x = \"${OPEN", &env(&[])).is_err());
    }

    /// A TOML document, when the text is one.
    fn parsed(text: &str) -> Option<toml::Table> {
        toml::from_str(text).ok()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2048, failure_persistence: None, ..proptest::prelude::ProptestConfig::default() })]

        /// Whatever an environment value holds (quotes, backslashes, newlines,
        /// `${...}`, TOML syntax), it either lands verbatim as the one value
        /// it stands for, or is refused with an error naming the variable:
        /// the document around it never changes.
        #[test]
        fn no_value_changes_the_document(value in "(.|\\n|\"|'|\\\\|\\$\\{[A-Z]{1,3}\\}|=|\\[|#){0,24}") {
            let vars = env(&[("V", value.as_str()), ("A", "other")]);
            for (template, quoted) in [
                ("a = \"pre ${V} post\"\nsentinel = 1\n", true),
                ("a = 'pre ${V} post'\nsentinel = 1\n", true),
                ("a = ${V}\nsentinel = 1\n", false),
                ("[t]\na = [\"${V}\", 'x']\nsentinel = 1\n", true),
            ] {
                match interpolate(template, &vars) {
                    Ok(text) => {
                        let Some(table) = parsed(&text) else {
                            // A bare value that is not a TOML value: the
                            // loader reports the TOML error.
                            proptest::prop_assert!(!quoted, "{template:?} with {value:?} gave invalid TOML: {text:?}");
                            continue;
                        };
                        let table = table.get("t").and_then(toml::Value::as_table).cloned().unwrap_or(table);
                        let keys: Vec<&String> = table.keys().collect();
                        proptest::prop_assert_eq!(keys, vec!["a", "sentinel"], "{:?} with {:?}: {:?}", template, value, text);
                        let a = match &table["a"] {
                            toml::Value::Array(items) => items[0].clone(),
                            other => other.clone(),
                        };
                        if quoted {
                            let expected = if template.contains("pre") { format!("pre {value} post") } else { value.clone() };
                            proptest::prop_assert_eq!(a.as_str(), Some(expected.as_str()));
                        }
                    }
                    Err(errors) => {
                        proptest::prop_assert!(errors.iter().all(|error| error.contains("V")), "{errors:?}");
                    }
                }
            }
        }
    }
}
