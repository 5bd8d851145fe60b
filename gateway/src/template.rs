//! `google.api.http` path templates: parsing and matching.
//!
//! The grammar (from `google/api/http.proto`):
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```
//!
//! Written by hand: the crates that transcode (`tonic-rest`, `structured-proxy`)
//! generate routes at build time or proxy without the annotations' full
//! grammar, and this is the one piece the gateway needs at run time from a
//! descriptor set. A template compiles to a flat list of segments plus the
//! spans that variables capture, so matching is one linear pass (`**` may only
//! be last, as the grammar's users and grpc-gateway require).

use std::fmt;

/// One segment of a compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    /// `*`: exactly one path segment.
    Single,
    /// `**`: the rest of the path (zero or more segments).
    Rest,
}

/// A variable: the request field it sets and the segments it spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// `order_id`, or `flag.name` for a nested field.
    pub field_path: Vec<String>,
    start: usize,
    end: usize,
}

impl Variable {
    pub fn field(&self) -> String {
        self.field_path.join(".")
    }
}

/// Variables matched in a path: each field path with its decoded value.
pub type Captures = Vec<(Vec<String>, String)>;

/// A compiled path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub segments: Vec<Segment>,
    pub variables: Vec<Variable>,
    pub verb: Option<String>,
    source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path template {template:?}: {reason}")]
pub struct TemplateError {
    template: String,
    reason: String,
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Template {
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let error = |reason: &str| TemplateError {
            template: source.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = source
            .strip_prefix('/')
            .ok_or_else(|| error("must start with '/'"))?;
        // The verb is a ':' after the last '/' that is outside braces.
        let (path, verb) = split_verb(rest);
        if verb.is_some_and(str::is_empty) {
            return Err(error("empty verb after ':'"));
        }
        let mut segments = Vec::new();
        let mut variables = Vec::new();
        let mut chars = path;
        while !chars.is_empty() {
            if let Some(after) = chars.strip_prefix('{') {
                let close = after.find('}').ok_or_else(|| error("unclosed '{'"))?;
                let inner = &after[..close];
                let (field, pattern) = match inner.split_once('=') {
                    Some((field, pattern)) => (field, pattern),
                    None => (inner, "*"),
                };
                let field_path: Vec<String> = field.split('.').map(str::to_owned).collect();
                if field_path.iter().any(|part| !is_ident(part)) {
                    return Err(error(&format!("bad field path {field:?} in a variable")));
                }
                let start = segments.len();
                for part in pattern.split('/') {
                    segments.push(plain_segment(part).ok_or_else(|| error("bad segment in a variable"))?);
                }
                variables.push(Variable {
                    field_path,
                    start,
                    end: segments.len(),
                });
                chars = &after[close + 1..];
            } else {
                let end = chars.find('/').unwrap_or(chars.len());
                let part = &chars[..end];
                if part.contains('{') || part.contains('}') {
                    return Err(error("a variable must be a whole segment"));
                }
                segments.push(plain_segment(part).ok_or_else(|| error("empty segment"))?);
                chars = &chars[end..];
            }
            match chars.strip_prefix('/') {
                Some("") => return Err(error("trailing '/'")),
                Some(after) => chars = after,
                None if chars.is_empty() => {}
                None => return Err(error("a variable must be a whole segment")),
            }
        }
        if segments.is_empty() {
            return Err(error("no segments"));
        }
        if let Some(position) = segments.iter().position(|s| *s == Segment::Rest)
            && position + 1 != segments.len()
        {
            return Err(error("'**' must be the last segment"));
        }
        Ok(Self {
            segments,
            variables,
            verb: verb.map(str::to_owned),
            source: source.to_owned(),
        })
    }

    /// Number of literal segments: more specific templates are tried first.
    pub fn literals(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count()
    }

    /// Matches a request path (still percent-encoded); on success, the
    /// variables' values, percent-decoded (a multi-segment value keeps its
    /// `/` separators, as the annotations' spec says).
    pub fn matches(&self, path: &str) -> Option<Captures> {
        let rest = path.strip_prefix('/')?;
        let rest = match &self.verb {
            Some(verb) => rest.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => rest,
        };
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        // spans[i] = the request segments that template segment i matched.
        let mut spans = Vec::with_capacity(self.segments.len());
        let mut at = 0;
        for segment in &self.segments {
            match segment {
                Segment::Literal(literal) => {
                    if parts.get(at) != Some(&literal.as_str()) {
                        return None;
                    }
                    spans.push((at, at + 1));
                    at += 1;
                }
                Segment::Single => {
                    if parts.get(at).is_none_or(|p| p.is_empty()) {
                        return None;
                    }
                    spans.push((at, at + 1));
                    at += 1;
                }
                Segment::Rest => {
                    spans.push((at, parts.len()));
                    at = parts.len();
                }
            }
        }
        if at != parts.len() {
            return None;
        }
        let mut values = Vec::with_capacity(self.variables.len());
        for variable in &self.variables {
            let from = spans[variable.start].0;
            let to = spans[variable.end - 1].1;
            let raw = parts[from..to].join("/");
            let value = if to - from == 1 {
                percent_decode(&raw)?
            } else {
                // Keep an encoded '/' inside a segment distinguishable.
                parts[from..to]
                    .iter()
                    .map(|p| percent_decode_keep_slash(p))
                    .collect::<Option<Vec<_>>>()?
                    .join("/")
            };
            values.push((variable.field_path.clone(), value));
        }
        Some(values)
    }

    /// The path with each variable shown as `{field}` (OpenAPI's form).
    pub fn openapi_path(&self) -> String {
        let mut out = String::new();
        let mut index = 0;
        while index < self.segments.len() {
            out.push('/');
            if let Some(variable) = self.variables.iter().find(|v| v.start == index) {
                out.push('{');
                out.push_str(&variable.field());
                out.push('}');
                index = variable.end;
                continue;
            }
            match &self.segments[index] {
                Segment::Literal(literal) => out.push_str(literal),
                Segment::Single => out.push('*'),
                Segment::Rest => out.push_str("**"),
            }
            index += 1;
        }
        if let Some(verb) = &self.verb {
            out.push(':');
            out.push_str(verb);
        }
        out
    }
}

fn split_verb(rest: &str) -> (&str, Option<&str>) {
    let mut depth = 0usize;
    let mut last_slash = 0;
    let mut colon = None;
    for (index, c) in rest.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            '/' if depth == 0 => {
                last_slash = index;
                colon = None;
            }
            ':' if depth == 0 && index >= last_slash => colon = Some(index),
            _ => {}
        }
    }
    match colon {
        Some(index) => (&rest[..index], Some(&rest[index + 1..])),
        None => (rest, None),
    }
}

fn plain_segment(part: &str) -> Option<Segment> {
    match part {
        "" => None,
        "*" => Some(Segment::Single),
        "**" => Some(Segment::Rest),
        literal if literal.contains(['{', '}', '=', '*']) => None,
        literal => Some(Segment::Literal(literal.to_owned())),
    }
}

fn is_ident(part: &str) -> bool {
    let mut chars = part.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn percent_decode(raw: &str) -> Option<String> {
    decode(raw, false)
}

fn percent_decode_keep_slash(raw: &str) -> Option<String> {
    decode(raw, true)
}

/// RFC 3986 percent-decoding; `None` on a malformed escape or bytes that are
/// not UTF-8. With `keep_slash`, `%2F` stays encoded.
pub fn decode(raw: &str, keep_slash: bool) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = raw.get(index + 1..index + 3)?;
            let byte = u8::from_str_radix(hex, 16).ok()?;
            if keep_slash && byte == b'/' {
                out.extend_from_slice(&bytes[index..index + 3]);
            } else {
                out.push(byte);
            }
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(template: &str, path: &str) -> Option<Vec<(String, String)>> {
        Template::parse(template)
            .expect("template parses")
            .matches(path)
            .map(|values| values.into_iter().map(|(f, v)| (f.join("."), v)).collect())
    }

    fn pair(field: &str, value: &str) -> (String, String) {
        (field.to_owned(), value.to_owned())
    }

    #[test]
    fn literal_paths_match_exactly() {
        assert_eq!(vars("/v1/orders", "/v1/orders"), Some(vec![]));
        assert_eq!(vars("/v1/orders", "/v1/orders/x"), None);
        assert_eq!(vars("/v1/orders", "/v1/order"), None);
        assert_eq!(vars("/v1/orders", "/v1"), None);
    }

    #[test]
    fn a_variable_takes_one_segment_and_is_decoded() {
        assert_eq!(
            vars("/v1/orders/{order_id}", "/v1/orders/abc"),
            Some(vec![pair("order_id", "abc")])
        );
        assert_eq!(
            vars("/v1/stock/{sku}", "/v1/stock/SKU%20one"),
            Some(vec![pair("sku", "SKU one")])
        );
        assert_eq!(vars("/v1/orders/{order_id}", "/v1/orders/a/b"), None);
        assert_eq!(vars("/v1/orders/{order_id}", "/v1/orders/"), None);
        assert_eq!(
            vars("/v1/orders/{order_id}", "/v1/orders/%zz"),
            None,
            "malformed escape"
        );
    }

    #[test]
    fn custom_verbs_bind_only_with_the_verb() {
        let cancel = "/v1/orders/{order_id}:cancel";
        assert_eq!(
            vars(cancel, "/v1/orders/o-1:cancel"),
            Some(vec![pair("order_id", "o-1")])
        );
        assert_eq!(vars(cancel, "/v1/orders/o-1"), None);
        assert_eq!(vars(cancel, "/v1/orders/o-1:watch"), None);
        assert_eq!(
            vars("/v1/stock:checkAvailability", "/v1/stock:checkAvailability"),
            Some(vec![])
        );
        assert_eq!(vars("/v1/stock:checkAvailability", "/v1/stock"), None);
    }

    #[test]
    fn nested_field_paths_are_kept() {
        assert_eq!(
            vars("/v1/mesh/flags/{flag.name}", "/v1/mesh/flags/new-checkout"),
            Some(vec![pair("flag.name", "new-checkout")])
        );
    }

    #[test]
    fn multi_segment_variables_and_double_wildcards() {
        let t = "/v1/{name=shelves/*/books/*}";
        assert_eq!(
            vars(t, "/v1/shelves/s1/books/b2"),
            Some(vec![pair("name", "shelves/s1/books/b2")])
        );
        assert_eq!(vars(t, "/v1/shelves/s1/books"), None);
        assert_eq!(vars(t, "/v1/shelves/s1/novels/b2"), None);
        let rest = "/v1/files/{path=**}";
        assert_eq!(
            vars(rest, "/v1/files/a/b/c.txt"),
            Some(vec![pair("path", "a/b/c.txt")])
        );
        assert_eq!(vars(rest, "/v1/files"), Some(vec![pair("path", "")]));
        assert_eq!(
            vars(rest, "/v1/files/a%2Fb/c"),
            Some(vec![pair("path", "a%2Fb/c")]),
            "an encoded slash inside a segment stays encoded in a multi-segment value"
        );
        assert_eq!(vars("/v1/*/x", "/v1/anything/x"), Some(vec![]));
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        for bad in [
            "v1/orders",
            "/v1/orders/",
            "/v1/{order_id",
            "/v1/{1bad}",
            "/v1/**/x",
            "/v1/a{b}",
            "/v1/x:",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn openapi_path_shows_variables_by_field() {
        let template = Template::parse("/v1/orders/{order_id}:cancel").expect("parses");
        assert_eq!(template.openapi_path(), "/v1/orders/{order_id}:cancel");
        let nested = Template::parse("/v1/{name=shelves/*}/x").expect("parses");
        assert_eq!(nested.openapi_path(), "/v1/{name}/x");
        assert_eq!(nested.literals(), 3, "literals inside a variable count too");
    }
}
