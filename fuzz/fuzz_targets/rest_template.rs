//! `google.api.http` path templates and the matching of request paths
//! against them. Input: a template, a newline, a request path.
//!
//! Any text is parsed or refused; a parsed template shows as its source,
//! which parses to the same template; matching any path answers without
//! panicking, and a match captures every variable of the template, each
//! value decoded from the path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ordermesh_gateway::template::{Template, decode};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (source, path) = text.split_once('\n').unwrap_or((text, "/"));
    let _ = decode(path, false);
    let _ = decode(path, true);
    let Ok(template) = Template::parse(source) else {
        return;
    };
    assert_eq!(Template::parse(&template.to_string()).as_ref(), Ok(&template));
    let _ = template.openapi_path();
    let _ = template.literals();
    if let Some(captures) = template.matches(path) {
        let fields: Vec<&Vec<String>> = captures.iter().map(|(field, _)| field).collect();
        let declared: Vec<&Vec<String>> = template.variables.iter().map(|v| &v.field_path).collect();
        assert_eq!(fields, declared, "{source:?} on {path:?}");
    }
});
